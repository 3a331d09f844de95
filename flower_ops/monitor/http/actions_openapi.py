"""OpenAPI description of the action routes (kept next to their handlers)."""
from __future__ import annotations

from typing import Any

from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.outcomes import AUDITED, OUTCOMES
from flower_ops.monitor.http import openapi

_NULLABLE_STRING = {"type": "string", "nullable": True}
_TASK_ID = {"name": "task_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
_OUTCOMES = list(OUTCOMES)

TASK_OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["id", "outcome"],
    "properties": {
        "id": {"type": "string", "description": "the task acted on"},
        "outcome": {"type": "string", "enum": _OUTCOMES},
        "state": {"type": "string", "nullable": True,
                  "description": "the task's state after the action (cancel: REVOKED; retry: "
                                 "unchanged) or, when refused, its current state"},
        "previous_state": {"type": "string"},
        "terminate": {"type": "boolean",
                      "description": "a running task's process is sent SIGTERM"},
        "new_id": {"type": "string", "description": "retry: the new task's id"},
        "new_state": {"type": "string", "description": "retry: the new task's state"},
        "retried_as": _NULLABLE_STRING,
        "name": _NULLABLE_STRING,
        "queue": _NULLABLE_STRING,
        "reason": {"type": "string", "nullable": True,
                   "enum": [None, "unknown_task", "state", "already_retried",
                            "arguments_not_exact", "name_unknown"]},
        "message": _NULLABLE_STRING,
        "detail": {},
        "audit": {"type": "string", "enum": ["database", "log"]},
    },
}


def _bulk_body(max_tasks: int) -> dict[str, Any]:
    # null is the same as leaving the key out
    filter_props: dict[str, Any] = {
        name: {"type": "string", "nullable": True}
        for name in ("name", "worker", "queue", "search", "cursor")}
    filter_props.update(
        state={"oneOf": [{"type": "string"}, {"type": "array", "items": {
            "type": "string", "enum": list(TASK_STATES)}}], "nullable": True,
            "description": "narrowed to the states the action applies to"},
        since={"oneOf": [{"type": "number"}, {"type": "string"}], "nullable": True},
        until={"oneOf": [{"type": "number"}, {"type": "string"}], "nullable": True},
        order={"type": "string", "enum": ["desc", "asc", None], "nullable": True},
        source={"type": "string", "enum": ["auto", "memory", "db", None], "nullable": True})
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


BULK_REPORT: dict[str, Any] = {
    "type": "object",
    "required": ["action", "dry_run", "requested", "counts", "results", "next"],
    "properties": {
        "action": {"type": "string", "enum": ["cancel", "retry"]},
        "dry_run": {"type": "boolean"},
        "requested": {"type": "integer"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "results": {"type": "array", "items": TASK_OUTCOME},
        "next": {"type": "string", "nullable": True,
                 "description": "filters only: put it in filters.cursor to continue"},
        "max_tasks": {"type": "integer"},
        "audit": {"type": "string", "enum": ["database", "log"]},
    },
}


AUDIT_LOG: dict[str, Any] = {
    "type": "object", "required": ["entries", "next"],
    "properties": {
        "entries": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "timestamp": {"type": "number"},
            "subject": {"type": "string"}, "action": {"type": "string"},
            "task_id": _NULLABLE_STRING,
            "outcome": {"type": "string", "enum": list(AUDITED)},
            "detail": {}}}},
        "next": {"type": "string", "nullable": True,
                 "description": "pass as cursor for older entries"},
    },
}


def openapi_paths(*, max_tasks: int) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    paths["/audit"] = {"get": {
        "summary": "Operator actions (cancel, retry), newest first",
        "operationId": "listAudit",
        "parameters": [
            {"name": "task_id", "in": "query", "schema": {"type": "string"}},
            {"name": "subject", "in": "query", "schema": {"type": "string"}},
            {"name": "action", "in": "query",
             "schema": {"type": "string", "enum": ["cancel", "retry"]}},
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {**openapi.ok(AUDIT_LOG), **openapi.errors(400, 401, 403, 503)},
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
        "parameters": [_TASK_ID],
        "responses": {**openapi.ok(TASK_OUTCOME),
                      "202": {"description": "Revoke sent, the running task not ended yet",
                              "content": {"application/json": {"schema": TASK_OUTCOME}}},
                      **openapi.errors(400, 401, 403, 404, 409, 503)},
    }}
    paths["/tasks/{task_id}/retry"] = {"post": {
        "summary": "Retry a task (FAILURE or REVOKED) as a new task",
        "operationId": "retryTask",
        "description": "Sends a new task with the same name, exact args and kwargs, queue and "
                       "routing. The new row has retry_of, the original gains retried_as. "
                       "Audited.",
        "parameters": [_TASK_ID],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"force": {"type": "boolean", "default": False}}}}}},
        "responses": {**openapi.ok(TASK_OUTCOME), **openapi.errors(400, 401, 403, 404, 409, 413,
                                                                    503)},
    }}
    for action in ("cancel", "retry"):
        paths[f"/tasks/bulk/{action}"] = {"post": {
            "summary": f"{action.capitalize()} many tasks, by ids or by GET /tasks filters",
            "operationId": f"bulk{action.capitalize()}Tasks",
            "requestBody": _bulk_body(max_tasks),
            "responses": {**openapi.ok(BULK_REPORT),
                          **openapi.errors(400, 401, 403, 413, 503)},
        }}
    return paths
