"""Component schemas of the operator actions: cancel and retry answers, bulk
reports and their items, the audit log (conventions in ``schemas.py``).
Outcomes say what happened in one vocabulary (``core/outcomes.py``)."""
from __future__ import annotations

from flower_ops.core.outcomes import (
    AUDITED,
    CANCELLED,
    OUTCOMES,
    REQUESTED,
    RETRIED,
)
from flower_ops.monitor.http.schemas import (
    ANY_JSON,
    BOOLEAN,
    COUNT,
    INSTANT,
    INTEGER,
    N_STRING,
    STRING,
    STRINGS,
    TASK_STATE,
    Schema,
    closed,
    nullable,
    ref,
    with_description,
)

ACTION = {"type": "string", "enum": ["cancel", "retry"]}
AUDIT_WHERE = {"type": "string", "enum": ["database", "log"],
               "description": "where the action was audited"}
REASONS = ["unknown_task", "state", "already_retried", "arguments_not_exact", "name_unknown"]
REASON = with_description(nullable({"type": "string", "enum": REASONS}),
                          "why it was refused (outcome rejected or not_found)")
N_STATE = nullable(TASK_STATE)
_TERMINATE = with_description(BOOLEAN, "a running task's process is sent SIGTERM")

CANCEL_ANSWER = closed({
    "id": with_description(STRING, "the task acted on"),
    "outcome": {"type": "string", "enum": [CANCELLED, REQUESTED],
                "description": "cancelled (200): it will not run, REVOKED everywhere; "
                               "requested (202): a running task was signalled and has not "
                               "ended yet"},
    "previous_state": TASK_STATE,
    "state": with_description(TASK_STATE, "its state now"),
    "terminate": _TERMINATE,
    "name": N_STRING,
    "message": STRING,
    "audit": AUDIT_WHERE,
}, required=["id", "outcome", "previous_state", "state", "terminate", "name", "audit"],
    description="POST /tasks/{task_id}/cancel")

RETRY_ANSWER = closed({
    "id": with_description(STRING, "the task retried"),
    "outcome": {"type": "string", "enum": [RETRIED]},
    "state": with_description(TASK_STATE, "the original's state (unchanged)"),
    "previous_state": TASK_STATE,
    "new_id": with_description(STRING, "the new task's id"),
    "new_state": with_description(TASK_STATE, "the new task's state"),
    "retried_as": with_description(STRING, "the same as new_id"),
    "name": STRING,
    "queue": N_STRING,
    "audit": AUDIT_WHERE,
    "resume": closed({
        "outcome": {"type": "string", "enum": ["resumed", "alone"],
                    "description": "resumed: a failed workflow step sent with what followed "
                                   "it (POST /workflows/{root_id}/retry for that step); "
                                   "alone: retried by itself"},
        "workflow_id": with_description(N_STRING, "the workflow the task is in"),
        "kind": nullable({"type": "string", "enum": ["chain", "chord", "group", "task"]}),
        "continuation": {"type": "array", "items": closed(
            {"task_id": N_STRING, "new_id": STRING, "name": N_STRING}),
            "description": "the steps that run after it (new ids)"},
        "reason": with_description(N_STRING, "a workflow step retried alone: why it could "
                                   "not be resumed"),
    }),
}, description="POST /tasks/{task_id}/retry")

BULK_ITEM = closed({
    "id": STRING,
    "outcome": {"type": "string", "enum": list(OUTCOMES)},
    "state": with_description(N_STATE, "after the action, or (refused) the task's state; "
                                       "null when unknown"),
    "previous_state": TASK_STATE,
    "terminate": _TERMINATE,
    "name": N_STRING,
    "queue": N_STRING,
    "new_id": STRING,
    "new_state": TASK_STATE,
    "retried_as": N_STRING,
    "reason": REASON,
    "message": STRING,
    "detail": with_description(ANY_JSON, "outcome unavailable: the error's detail"),
    "published": with_description(BOOLEAN, "false: a workflow step not sent yet, revoked "
                                   "before it was"),
}, required=["id", "outcome", "state"], description="One task of a bulk action")

BULK_REPORT = closed({
    "action": ACTION,
    "dry_run": with_description(BOOLEAN, "true: would_cancel / would_retry, nothing done"),
    "requested": with_description(COUNT, "distinct tasks asked for"),
    "counts": closed(dict.fromkeys(OUTCOMES, COUNT), required=[],
                     description="tasks per outcome (only outcomes that occurred)"),
    "results": {"type": "array", "items": ref("BulkItem")},
    "next": with_description(N_STRING, "filters only: put it in filters.cursor to continue"),
    "max_tasks": COUNT,
    "audit": AUDIT_WHERE,
}, description="POST /tasks/bulk/{action}")

AUDIT_DETAIL = nullable(closed({
    "previous_state": N_STATE, "new_id": STRING, "state": N_STATE,
    "reason": with_description(N_STRING, "refusal reason, or the error (unavailable)"),
    "detail": ANY_JSON,
    "workflow": with_description(STRING, "the workflow a resume or workflow cancel acted on"),
    "resume": with_description(STRING, "how the step was resumed: chain, chord, group, task"),
    "continuation": with_description(STRINGS, "new ids of the steps sent after it"),
}, required=[]))

AUDIT_ENTRY = closed({
    "id": INTEGER, "timestamp": INSTANT,
    "subject": with_description(STRING, "who acted (the token's subject)"),
    "action": ACTION, "task_id": N_STRING,
    "outcome": {"type": "string", "enum": list(AUDITED)},
    "detail": AUDIT_DETAIL,
})

AUDIT_LOG = closed({
    "entries": {"type": "array", "items": ref("AuditEntry")},
    "next": with_description(N_STRING, "pass as cursor for older entries"),
}, description="GET /audit")

SCHEMAS: dict[str, Schema] = {
    "CancelAnswer": CANCEL_ANSWER, "RetryAnswer": RETRY_ANSWER, "BulkItem": BULK_ITEM,
    "BulkReport": BULK_REPORT, "AuditEntry": AUDIT_ENTRY, "AuditLog": AUDIT_LOG,
}
