"""Component schemas of the OpenAPI document (3.1, JSON Schema 2020-12): the
building blocks, tasks, the token and the index. System answers (stats,
workers, queues, alerts) are in ``schemas_system.py``, actions in
``schemas_actions.py``; ``openapi.py`` puts them all under
``components.schemas``.

Every object is closed (``additionalProperties: false``, or a schema for
maps keyed by names such as task names); ``required`` lists the fields that
are always there; a field that may be null says so in its ``type``. Every
instant is ``INSTANT`` and every duration ``DURATION``.
"""
from __future__ import annotations

from typing import Any

from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.times import ISO_PATTERN

Schema = dict[str, Any]

# ISO 8601 in UTC with milliseconds, e.g. 2026-11-30T12:54:08.123Z (SPEC §11)
INSTANT: Schema = {"type": "string", "format": "date-time", "pattern": ISO_PATTERN}
# seconds, rounded to the millisecond
DURATION: Schema = {"type": "number", "minimum": 0}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
# task data (arguments, results) and error details: any JSON value
ANY_JSON: Schema = {"description": "any JSON value"}
STRINGS: Schema = {"type": "array", "items": STRING}
TASK_STATE: Schema = {"type": "string", "enum": list(TASK_STATES)}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null."""
    if "$ref" in schema or "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    types = out["type"] if isinstance(out["type"], list) else [out["type"]]
    out["type"] = [*types, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def closed(properties: dict[str, Schema], required: list[str] | tuple[str, ...] | None = None,
           description: str | None = None) -> Schema:
    """An object with exactly these ``properties`` (all required unless
    ``required`` names the ones that are)."""
    schema: Schema = {"type": "object",
                      "required": list(properties if required is None else required),
                      "properties": properties, "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


def mapping(values: Schema, description: str) -> Schema:
    """An object keyed by names (task names, queue priorities...)."""
    return {"type": "object", "additionalProperties": values, "description": description}


def with_description(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description}


N_STRING = nullable(STRING)
N_INTEGER = nullable(INTEGER)
N_COUNT = nullable(COUNT)
N_NUMBER = nullable(NUMBER)
N_INSTANT = nullable(INSTANT)
N_DURATION = nullable(DURATION)

ERROR = closed({"error": with_description(STRING, "what went wrong"),
                "detail": with_description(ANY_JSON, "more about it (null when nothing)")},
               description="Every error answer: 400, 401, 403, 404, 409, 413, 503")

# -- tasks ------------------------------------------------------------------------------

# What every listed task carries, from memory and from PostgreSQL alike
_TASK_COMMON: dict[str, Schema] = {
    "id": STRING, "name": N_STRING, "state": TASK_STATE, "worker": N_STRING,
    "queue": N_STRING,
    "args": with_description(ANY_JSON, "positional arguments: a list when exact "
                             "(args_exact), else what Celery's repr says"),
    "kwargs": with_description(ANY_JSON, "keyword arguments: an object when exact"),
    "args_exact": with_description(BOOLEAN, "args and kwargs are exactly what was sent"),
    "result": with_description(ANY_JSON, "the task's return value"),
    "exception": N_STRING, "retries": N_COUNT,
    "runtime": with_description(N_DURATION, "seconds the task ran"),
    "timestamp": with_description(N_INSTANT, "its latest change"),
    "sent": N_INSTANT, "received": N_INSTANT, "started": N_INSTANT, "succeeded": N_INSTANT,
    "failed": N_INSTANT, "retried": N_INSTANT, "revoked": N_INSTANT,
}
# What PostgreSQL knows besides (its listings carry them; memory's do not)
_TASK_STORED: dict[str, Schema] = {
    "traceback": N_STRING, "routing_key": N_STRING, "exchange": N_STRING,
    "parent_id": N_STRING, "root_id": N_STRING,
    "workflow_id": with_description(N_STRING, "the workflow (chain, group, chord...) it "
                                    "belongs to: GET /workflows/{root_id}"),
    "retry_of": with_description(N_STRING, "the task this one retries"),
    "retried_as": with_description(N_STRING, "the task that retried this one"),
    "eta": N_INSTANT, "expires": N_INSTANT,
    "worker_lost": with_description(BOOLEAN, "its worker went away while it ran"),
    "updated": with_description(N_INSTANT, "when its row last changed"),
}
_TASK_SOURCE = {"type": "string", "enum": ["memory", "db", "memory+db"],
                "description": "who answered: Flower's memory, PostgreSQL, or both merged"}

TASK_SUMMARY = closed({**_TASK_COMMON, **_TASK_STORED, "source": _TASK_SOURCE},
                      required=list(_TASK_COMMON),
                      description="A task in a listing (source=db listings add what "
                                  "PostgreSQL stores)")

HISTORY_STEP = closed({
    "state": {"type": "string", "enum": [*TASK_STATES, "REJECTED"],
              "description": "REJECTED: Flower's task-rejected, stored as FAILURE"},
    "timestamp": N_INSTANT,
    "worker": N_STRING,
    "source": with_description(STRING, "event, reconcile, operator..."),
    "retries": N_COUNT, "error": N_STRING, "runtime": N_DURATION,
    "operator": with_description(STRING, "who acted (operator steps)"),
    "action": {"type": "string", "enum": ["cancel", "retry"]},
    "retry_of": STRING,
    "reason": N_STRING,
}, required=["state", "timestamp"], description="One transition of a task")

TASK_DETAIL = closed({
    **_TASK_COMMON, **_TASK_STORED,
    "children": STRINGS,
    "history": {"type": "array", "items": ref("HistoryStep"),
                "description": "every transition, in lifecycle order"},
    "rejected": with_description(N_INSTANT, "Flower's task-rejected time (memory)"),
    "client": with_description(N_STRING, "who published it (memory)"),
    "trace_id": with_description(N_STRING, "W3C trace id the publisher's tracing gave it"),
    "trace_url": with_description(N_STRING, "link to its trace (FLOWER_OPS_TRACE_URL)"),
    "source": _TASK_SOURCE,
}, required=[*_TASK_COMMON, "traceback", "routing_key", "exchange", "eta", "expires",
             "parent_id", "root_id", "children", "history", "retry_of", "retried_as",
             "trace_id", "trace_url", "workflow_id", "source"],
    description="Everything known about one task (SPEC §3)")

TASK_LIST = closed({
    "tasks": {"type": "array", "items": ref("TaskSummary")},
    "total": with_description(COUNT, "tasks matching the filters"),
    "total_estimated": with_description(
        BOOLEAN, "source db or all: true when total is PostgreSQL's estimate (past "
                 "1,000 matching rows they are not counted one by one)"),
    "next": with_description(N_STRING, "cursor of the next page; null on the last"),
    "prev": with_description(N_STRING, "cursor of the page before this one (the same "
                             "order); null on the first"),
    "source": {"type": "string", "enum": ["memory", "db", "all"],
               "description": "who listed: Flower's memory, PostgreSQL, or all (PostgreSQL's "
                              "history with memory laid over it)"},
}, required=["tasks", "total", "next", "prev", "source"])

TASK_COUNTS = closed({
    "by_state": closed(dict.fromkeys(TASK_STATES, COUNT),
                       description="every state, 0 when none"),
    "total": with_description(COUNT, "the sum of by_state"),
    "source": {"type": "string", "enum": ["memory", "db", "all"]},
    "estimated_states": {"type": "array", "items": {"type": "string", "enum": list(TASK_STATES)},
                         "description": "states whose count is PostgreSQL's planner estimate "
                                        "(more than 1,000 rows); absent when every count "
                                        "is exact"},
}, required=["by_state", "total", "source"],
    description="GET /tasks/counts: tasks per state for the GET /tasks filters")

# -- the token and the index ---------------------------------------------------------

TOKEN = closed({
    "access_token": STRING,
    "token_type": {"type": "string", "enum": ["Bearer"]},
    "expires_in": with_description(COUNT, "seconds"),
    "expires_at": INSTANT,
    "scope": with_description(STRING, "granted scopes, space-separated"),
    "subject": STRING,
})

INDEX = closed({
    "name": STRING, "version": with_description(STRING, "the product's version"),
    "api_version": STRING,
    "openapi": with_description(STRING, "path of this document"),
    "links": mapping(closed({"href": STRING, "method": STRING, "summary": STRING}),
                     "one link per operation, by operationId"),
}, description="GET /api/automation/monitoring")

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR, "TaskSummary": TASK_SUMMARY, "HistoryStep": HISTORY_STEP,
    "TaskDetail": TASK_DETAIL, "TaskList": TASK_LIST, "TaskCounts": TASK_COUNTS,
    "Token": TOKEN, "Index": INDEX,
}
