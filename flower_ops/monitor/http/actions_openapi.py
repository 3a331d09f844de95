"""OpenAPI description of the action routes (kept next to their handlers)."""
from __future__ import annotations

from typing import Any

from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.monitor.http import openapi
from flower_ops.monitor.http.idempotent import OPENAPI_PARAMETER
from flower_ops.monitor.http.schemas import ref

_TASK_ID = openapi.TASK_ID_PARAMETER
_NULLABLE_STRING = {"type": ["string", "null"]}


def _bulk_body(max_tasks: int) -> dict[str, Any]:
    # null is the same as leaving the key out
    filter_props: dict[str, Any] = dict.fromkeys(
        ("name", "worker", "queue", "search", "cursor"), _NULLABLE_STRING)
    time = {"type": ["number", "string", "null"],
            "description": "ISO 8601 (without an offset: UTC) or epoch seconds"}
    filter_props.update(
        state={"oneOf": [{"type": "string"}, {"type": "array", "items": {
            "type": "string", "enum": list(TASK_STATES)}}, {"type": "null"}],
            "description": "narrowed to the states the action applies to"},
        since=time, until=time,
        order={"type": ["string", "null"], "enum": ["desc", "asc", None]},
        source={"type": ["string", "null"], "enum": ["auto", "memory", "db", "all", None]})
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "description": 'Exactly one of "ids" or "filters".',
        "oneOf": [{"required": ["ids"]}, {"required": ["filters"]}],
        "properties": {
            "ids": {"type": "array", "items": {"type": "string", "minLength": 1,
                                               "maxLength": 255},
                    "minItems": 1, "maxItems": max_tasks},
            "filters": {"type": "object", "additionalProperties": False,
                       "properties": filter_props,
                       "description": "the parameters of GET /tasks"},
            "limit": {"type": "integer", "minimum": 1, "maximum": max_tasks,
                      "default": max_tasks,
                      "description": "at most this many tasks (FLOWER_OPS_BULK_MAX_TASKS caps it)"},
            "dry_run": {"type": "boolean", "default": False,
                        "description": "report what would be done, do nothing"},
            "force": {"type": "boolean", "default": False,
                      "description": "retry: also tasks already retried once"},
        }}}}}


def openapi_paths(*, max_tasks: int) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    paths["/audit"] = {"get": {
        "summary": "Operator actions (cancel, retry), newest first",
        "operationId": "listAudit",
        "parameters": [
            openapi.query("task_id", {"type": "string"}, "at most 256 characters"),
            openapi.query("subject", {"type": "string"}, "at most 256 characters"),
            openapi.query("action", {"type": "string", "enum": ["cancel", "retry"]}),
            openapi.query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                    "default": 100}),
            openapi.query("cursor", {"type": "string"}, "the next of the previous page"),
        ],
        "responses": {**openapi.ok(ref("AuditLog")), **openapi.errors(400, 401, 403, 503)},
    }}
    paths["/tasks/{task_id}/cancel"] = {"post": {
        "summary": "Cancel a task (PENDING, RECEIVED or STARTED)",
        "operationId": "cancelTask",
        "description": "Revokes the task in Celery; a running one is terminated (SIGTERM), a "
                       "queued one is taken out of its queue where the broker allows (Redis). "
                       "The answer says what happened: 200 cancelled (REVOKED everywhere, the "
                       "row cancelled, at once); 409 when the task ended first, with its real "
                       "state; 202 requested when a running task was signalled and has not "
                       "ended within FLOWER_OPS_CANCEL_CONFIRM_SECONDS. Audited.",
        "parameters": [_TASK_ID, OPENAPI_PARAMETER],
        "responses": {**openapi.ok(ref("CancelAnswer"), "Cancelled"),
                      "202": openapi.response(ref("CancelAnswer"), "Revoke sent, the running "
                                              "task not ended yet (outcome requested)"),
                      **openapi.errors(400, 401, 403, 404, 409, 413, 422, 503)},
    }}
    paths["/tasks/{task_id}/retry"] = {"post": {
        "summary": "Retry a task (FAILURE or REVOKED) as a new task",
        "operationId": "retryTask",
        "description": "Sends a new task with the same name, exact args and kwargs, queue and "
                       "routing. The new row has retry_of, the original gains retried_as. "
                       "Audited. Two monitors retrying the same task at once send one new "
                       "task: the other answers 409 (reason already_retried, retried_as).",
        "parameters": [_TASK_ID, OPENAPI_PARAMETER],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"force": {"type": "boolean", "default": False}}}}}},
        "responses": {**openapi.ok(ref("RetryAnswer"), "Retried"),
                      **openapi.errors(400, 401, 403, 404, 409, 413, 422, 503)},
    }}
    for action in ("cancel", "retry"):
        paths[f"/tasks/bulk/{action}"] = {"post": {
            "summary": f"{action.capitalize()} many tasks, by ids or by GET /tasks filters",
            "operationId": f"bulk{action.capitalize()}Tasks",
            "parameters": [OPENAPI_PARAMETER],
            "requestBody": _bulk_body(max_tasks),
            "responses": {**openapi.ok(ref("BulkReport"), "What was done (or, dry run, "
                                       "would be) to each task"),
                          **openapi.errors(400, 401, 403, 409, 413, 422, 503)},
        }}
    return paths
