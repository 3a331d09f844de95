"""The OpenAPI 3.1 document served at ``/api/automation/monitoring/openapi.json``.

Kept next to the handlers it describes. Each part of the monitor returns its
own paths (``HttpPart.openapi_paths``); the composition root joins them
(``document``). Every response of every operation has a content schema
(``components.schemas``: ``schemas.py``, ``schemas_system.py``,
``schemas_actions.py``, ``schemas_insights.py``), errors the ``Error`` one;
``tests/test_openapi_answers.py`` checks real answers of every operation against it.
"""
from __future__ import annotations

import copy
from typing import Any

from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.monitor.http import (
    schemas,
    schemas_actions,
    schemas_insights,
    schemas_system,
    schemas_workflows,
)
from flower_ops.monitor.http.params import MAX_LIMIT, MAX_TEXT, TASK_ID_MAX
from flower_ops.monitor.http.schemas import ref

OPENAPI_VERSION = "3.1.0"
ERROR_TEXT = {400: "Bad request (a parameter or the body; unknown query parameters too)",
              401: "Missing or invalid token", 403: "Missing scope",
              404: "Unknown task", 409: "Not allowed in the task's state",
              413: "Body too large",
              422: "Idempotency-Key already used for another request (method, path or body)",
              503: "Broker or database unavailable (or not configured)"}


def errors(*codes: int) -> dict[str, Any]:
    """Error answers (``Error``) for ``codes``."""
    return {str(c): response(ref("Error"), ERROR_TEXT[c]) for c in codes}


def response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """The 200 answer."""
    return {"200": response(schema, description)}


def query(name: str, schema: dict[str, Any], description: str | None = None,
          **extra: Any) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema, **extra}
    if description:
        parameter["description"] = description
    return parameter


TASK_ID_PARAMETER = {"name": "task_id", "in": "path", "required": True,
                     "schema": {"type": "string", "minLength": 1, "maxLength": TASK_ID_MAX}}
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_ORDER = {"type": "string", "enum": ["desc", "asc"], "default": "desc"}
_TIME_TEXT = ("ISO 8601 (e.g. 2026-11-30T12:54:08.123Z; without an offset it is UTC) or "
              "epoch seconds")
# what params.parse_task_query reads (TASK_QUERY_PARAMETERS)
TASK_QUERY = [
    query("state", {"type": "string"}, "Comma-separated states: " + ", ".join(TASK_STATES)),
    query("name", _TEXT, "the exact task name, or a prefix ending with *"),
    query("worker", _TEXT), query("queue", _TEXT),
    query("search", _TEXT, "free text over name, id, args, kwargs, result and exception"),
    query("since", {"type": "string"}, f"{_TIME_TEXT} (inclusive)"),
    query("until", {"type": "string"}, f"{_TIME_TEXT} (exclusive)"),
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}),
    query("cursor", {"type": "string"}, "a page's next or prev (the page after it or "
          "before it); a cursor of another source is a 400"),
    query("order", _ORDER),
    query("sort", {"type": "string"}, "Flower's spelling of order (desc, asc, newest, oldest, "
          "-time, time); ignored when order is given", deprecated=True),
    query("source", {"type": "string", "enum": ["auto", "memory", "db", "all"],
                     "default": "auto"},
          "memory (Flower's memory; auto: memory, or the cursor's source), db (PostgreSQL), "
          "all (PostgreSQL's history with memory laid over it: memory's view of the tasks it "
          "holds, and the tasks PostgreSQL has no row or an older state for yet, at their "
          "place; memory alone without a database)"),
]


def _components() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in (schemas.SCHEMAS, schemas_system.SCHEMAS, schemas_actions.SCHEMAS,
                 schemas_insights.SCHEMAS, schemas_workflows.SCHEMAS):
        found.update(part)
    return found


BASE: dict[str, Any] = {
    "openapi": OPENAPI_VERSION,
    "info": {"title": "Flower Ops monitoring API", "version": "1",
             "description": "Celery task monitoring and management. Every route except the "
                            "index (GET /api/automation/monitoring: an Index), this document and "
                            "/token needs a bearer JWT; GETs need "
                            "monitoring:read, actions monitoring:write. Instants are ISO 8601 "
                            "in UTC with milliseconds, durations seconds."},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "flowerBasic": {"type": "http", "scheme": "basic"},
        },
        "schemas": _components(),
    },
    "security": [{"bearer": []}],
    "paths": {
        "/stats": {"get": {
            "summary": "System statistics", "operationId": "getStats",
            "responses": {**ok(ref("Stats")), **errors(400, 401, 403)}}},
        "/tasks": {"get": {
            "summary": "List tasks, newest first", "operationId": "listTasks",
            "parameters": TASK_QUERY,
            "responses": {**ok(ref("TaskList")), **errors(400, 401, 403, 503)}}},
        "/tasks/counts": {"get": {
            "summary": "Tasks per state for the GET /tasks filters", "operationId": "countTasks",
            "description": "Takes every GET /tasks parameter; state, limit, cursor and order "
                           "are validated and left aside (every state is counted). source "
                           "all counts what GET /tasks?source=all lists.",
            "parameters": TASK_QUERY,
            "responses": {**ok(ref("TaskCounts")), **errors(400, 401, 403, 503)}}},
        "/tasks/{task_id}": {"get": {
            "summary": "Everything known about one task", "operationId": "getTask",
            "parameters": [TASK_ID_PARAMETER],
            "responses": {**ok(ref("TaskDetail")), **errors(400, 401, 403, 404, 503)}}},
        "/workers": {"get": {
            "summary": "Workers", "operationId": "listWorkers",
            "responses": {**ok(ref("WorkerList")), **errors(400, 401, 403)}}},
        "/queues": {"get": {
            "summary": "Queues", "operationId": "listQueues",
            "responses": {**ok(ref("QueueList")), **errors(400, 401, 403, 503)}}},
        "/": {"get": {
            "summary": "The API's index: the version and a link per operation",
            "operationId": "getIndex", "security": [],
            "description": "Public, like this document: it holds no data.",
            "responses": {**ok(ref("Index")), **errors(400)}}},
        "/token": {"post": {
            "summary": "Exchange Flower credentials for a short-lived API token",
            "operationId": "createToken", "security": [{"flowerBasic": []}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "scopes": {"oneOf": [{"type": "string"},
                                         {"type": "array", "items": {"type": "string"}},
                                         {"type": "null"}],
                               "description": "space-separated or a list; absent or null: "
                                              "every scope FLOWER_OPS_TOKEN_SCOPES grants"}}}}}},
            "responses": {**ok(ref("Token")), **errors(400, 401, 403, 413)}}},
    },
}


def document(base_path: str, paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole document: ``BASE`` plus the parts' ``paths``, served at ``base_path``."""
    doc = copy.deepcopy(BASE)
    for path, operations in paths.items():
        doc["paths"].setdefault(path, {}).update(copy.deepcopy(operations))
    doc["servers"] = [{"url": base_path}]
    return doc
