"""The OpenAPI 3 document served at ``/api/automation/monitoring/openapi.json``.

Kept next to the handlers it describes; tests check that every route is here
and that responses conform. Each part of the monitor returns its own paths
(``HttpPart.openapi_paths``); the composition root joins them.
"""
from __future__ import annotations

import copy
from typing import Any

from flower_ops.core.lifecycle import TASK_STATES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Missing or invalid token", 403: "Missing scope",
            404: "Unknown task", 409: "Not allowed in the task's state", 413: "Body too large",
            503: "Broker or database unavailable"}
    return {str(c): {"description": text[c],
                     "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema}}}}


INTEGER = {"type": "integer"}
TASK_SUMMARY_REF = {"$ref": "#/components/schemas/TaskSummary"}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_STRING = {"type": "string", "nullable": True}
NULLABLE_INT = {"type": "integer", "nullable": True}
ANY: dict[str, Any] = {}

TASK_SUMMARY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "state"],
    "properties": {
        "id": {"type": "string"}, "name": NULLABLE_STRING, "state": {"type": "string"},
        "worker": NULLABLE_STRING, "queue": NULLABLE_STRING, "args": ANY, "kwargs": ANY,
        "args_exact": {"type": "boolean"}, "result": ANY, "exception": NULLABLE_STRING,
        "retries": NULLABLE_INT, "runtime": NULLABLE_NUMBER, "timestamp": NULLABLE_NUMBER,
        "sent": NULLABLE_NUMBER, "received": NULLABLE_NUMBER, "started": NULLABLE_NUMBER,
        "succeeded": NULLABLE_NUMBER, "failed": NULLABLE_NUMBER, "retried": NULLABLE_NUMBER,
        "revoked": NULLABLE_NUMBER,
    },
}

TASK_DETAIL: dict[str, Any] = {
    "allOf": [TASK_SUMMARY, {
        "type": "object",
        "properties": {
            "traceback": NULLABLE_STRING, "routing_key": NULLABLE_STRING,
            "exchange": NULLABLE_STRING, "parent_id": NULLABLE_STRING,
            "root_id": NULLABLE_STRING,
            "children": {"type": "array", "items": {"type": "string"}},
            "history": {"type": "array", "items": {
                "type": "object", "properties": {"state": {"type": "string"},
                                                 "timestamp": NULLABLE_NUMBER}}},
            "retry_of": NULLABLE_STRING, "retried_as": NULLABLE_STRING,
            "source": {"type": "string"},
        },
    }],
}

BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Flower Ops monitoring API", "version": "1",
             "description": "Celery task monitoring and management. Every route except this "
                            "document and /token needs a bearer JWT; GETs need "
                            "monitoring:read, actions monitoring:write."},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "flowerBasic": {"type": "http", "scheme": "basic"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}, "detail": ANY}},
            "TaskSummary": TASK_SUMMARY,
            "TaskDetail": TASK_DETAIL,
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/stats": {"get": {
            "summary": "System statistics", "operationId": "getStats",
            "responses": {**_ok({"type": "object", "required": ["tasks", "workers", "alerts"],
                                 "properties": {
                                     "tasks": {"type": "object", "properties": {
                                         "total": {"type": "integer"},
                                         "by_state": {"type": "object",
                                                      "additionalProperties": INTEGER}}},
                                     "throughput": {"type": "object"},
                                     "success_rate": NULLABLE_NUMBER,
                                     "runtime": {"type": "object"},
                                     "workers": {"type": "object"},
                                     "queues": {"type": "object"},
                                     "alerts_total": {
                                         "type": "integer",
                                         "description": "active alerts; `alerts` lists the "
                                                        "100 most severe, oldest first"},
                                     "alerts_by_kind": {"type": "object",
                                                        "additionalProperties": {
                                                            "type": "integer"}},
                                     "alerts_by_severity": {"type": "object",
                                                            "additionalProperties": {
                                                                "type": "integer"}},
                                     "alerts": {"type": "array", "items": {
                                         "type": "object",
                                         "required": ["kind", "subject", "severity", "since",
                                                      "message"],
                                         "properties": {
                                             "id": {"type": "string"},
                                             "kind": {"type": "string"},
                                             "subject": {"type": "string"},
                                             "severity": {"type": "string",
                                                          "enum": ["warning", "critical"]},
                                             "since": {"type": "number"},
                                             "message": {"type": "string"},
                                             "raised_at": {"type": "number"},
                                             "details": {"type": "object"}}}},
                                 }}),
                          **_errors(400, 401, 403)}}},
        "/tasks": {"get": {
            "summary": "List tasks, newest first", "operationId": "listTasks",
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated states: " + ", ".join(TASK_STATES)},
                {"name": "name", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                {"name": "worker", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                {"name": "queue", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                {"name": "search", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                {"name": "since", "in": "query", "schema": {"type": "string"},
                 "description": "Epoch seconds or ISO 8601 (inclusive)"},
                {"name": "until", "in": "query", "schema": {"type": "string"},
                 "description": "Epoch seconds or ISO 8601 (exclusive)"},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {"name": "order", "in": "query",
                 "schema": {"type": "string", "enum": ["desc", "asc"], "default": "desc"}},
                {"name": "source", "in": "query",
                 "schema": {"type": "string", "enum": ["auto", "memory", "db"]}},
            ],
            "responses": {**_ok({"type": "object", "required": ["tasks", "total", "next"],
                                 "properties": {
                                     "tasks": {"type": "array", "items": TASK_SUMMARY_REF},
                                     "total": {"type": "integer"},
                                     "next": NULLABLE_STRING,
                                     "source": {"type": "string"}}}),
                          **_errors(400, 401, 403, 503)}}},
        "/tasks/{task_id}": {"get": {
            "summary": "Everything known about one task", "operationId": "getTask",
            "parameters": [{"name": "task_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
            "responses": {**_ok({"$ref": "#/components/schemas/TaskDetail"}),
                          **_errors(400, 401, 403, 404, 503)}}},
        "/workers": {"get": {
            "summary": "Workers", "operationId": "listWorkers",
            "responses": {**_ok({"type": "object", "required": ["workers"], "properties": {
                "workers": {"type": "array", "items": {"type": "object", "properties": {
                    "hostname": {"type": "string"},
                    "status": {"type": "string", "enum": ["online", "offline"]},
                    "active": NULLABLE_INT, "reserved": NULLABLE_INT,
                    "processed": NULLABLE_INT,
                    "loadavg": {"type": "array", "nullable": True, "items": {"type": "number"}},
                    "memory": {"type": "object"}, "pool": {"type": "object"},
                    "max_concurrency": NULLABLE_INT,
                    "queues": {"type": "array", "items": {"type": "string"}},
                    "last_heartbeat": NULLABLE_NUMBER,
                    "heartbeat_age_seconds": NULLABLE_NUMBER,
                    "offline_since": NULLABLE_NUMBER}}}}}),
                          **_errors(400, 401, 403)}}},
        "/queues": {"get": {
            "summary": "Queues", "operationId": "listQueues",
            "responses": {**_ok({"type": "object", "required": ["queues"], "properties": {
                "queues": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "messages": NULLABLE_INT,
                    "unacked": NULLABLE_INT, "consumers": NULLABLE_INT,
                    "rate_in": NULLABLE_NUMBER, "rate_out": NULLABLE_NUMBER,
                    "oldest_message_age_seconds": NULLABLE_NUMBER,
                    "revoked": {"type": "integer",
                                "description": "ready messages whose task is already revoked "
                                               "(a worker discards them; Redis: taken out at "
                                               "once, so 0)"},
                    "by_priority": {"type": "object",
                                    "additionalProperties": {"type": "integer"}}}}},
                "broker": {"type": "object", "properties": {
                    "transport": {"type": "string"}, "supported": {"type": "boolean"},
                    "source": {"type": "string",
                               "description": "redis, rabbitmq-management or "
                                              "amqp-passive-declare"},
                    "detail": NULLABLE_STRING}}}}),
                          **_errors(400, 401, 403, 503)}}},
        "/token": {"post": {
            "summary": "Exchange Flower credentials for a short-lived API token",
            "operationId": "createToken", "security": [{"flowerBasic": []}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "scopes": {"oneOf": [{"type": "string"},
                                         {"type": "array", "items": {"type": "string"}}],
                               "nullable": True,
                               "description": "space-separated or a list; absent or null: "
                                              "every scope FLOWER_OPS_TOKEN_SCOPES grants"}}}}}},
            "responses": {**_ok({"type": "object",
                                 "required": ["access_token", "token_type", "expires_in"],
                                 "properties": {"access_token": {"type": "string"},
                                                "token_type": {"type": "string"},
                                                "expires_in": {"type": "integer"},
                                                "expires_at": {"type": "number"},
                                                "scope": {"type": "string"},
                                                "subject": {"type": "string"}}}),
                          **_errors(400, 401, 403, 413)}}},
    },
}

def errors(*codes: int) -> dict[str, Any]:
    return _errors(*codes)


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return _ok(schema, description)


def document(base_path: str, paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole document: ``BASE`` plus the parts' ``paths``, served at ``base_path``."""
    doc = copy.deepcopy(BASE)
    for path, operations in paths.items():
        doc["paths"].setdefault(path, {}).update(copy.deepcopy(operations))
    doc["servers"] = [{"url": base_path}]
    return doc
