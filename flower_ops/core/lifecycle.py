"""The task lifecycle, written once: states, statuses, events, time fields
and which state wins.

Celery names a task's states (``PENDING`` ... ``REVOKED``); the
``automation.job_executions.status`` column names them our way
(``pending`` ... ``cancelled``, SPEC §8). Both processes, the SQL guard
(``automation.status_advances``, checked for parity against ``advances`` by
the tests) and the dashboard (served ``LIFECYCLE`` in the page) read them
from here.
"""
from __future__ import annotations

from typing import Any

TASK_STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

# Celery state <-> automation.job_executions.status (SPEC §8)
STATE_TO_STATUS = {
    "PENDING": "pending", "RECEIVED": "received", "STARTED": "started",
    "SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry", "REVOKED": "cancelled",
}
STATUS_TO_STATE = {status: state for state, status in STATE_TO_STATUS.items()}
OPEN_STATUSES = ("pending", "received", "started", "retry")

# Lifecycle timestamps, in the order a task goes through them; each is a
# field of the API's task (``started``) and a column (``started_at``).
TIMESTAMP_FIELDS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")

# Celery state -> the lifecycle timestamp that records reaching it
STATE_TIME_FIELDS = {
    "PENDING": "sent", "RECEIVED": "received", "STARTED": "started", "SUCCESS": "succeeded",
    "FAILURE": "failed", "RETRY": "retried", "REVOKED": "revoked",
}
TIME_FIELD_STATES = {field: state for state, field in STATE_TIME_FIELDS.items()}

# Celery event type -> (Celery state, the lifecycle timestamp it sets)
EVENT_STATES = {
    "task-sent": ("PENDING", "sent"),
    "task-received": ("RECEIVED", "received"),
    "task-started": ("STARTED", "started"),
    "task-succeeded": ("SUCCESS", "succeeded"),
    "task-failed": ("FAILURE", "failed"),
    "task-retried": ("RETRY", "retried"),
    "task-revoked": ("REVOKED", "revoked"),
    "task-rejected": ("FAILURE", "failed"),   # a worker refused it: it will not run
}

# How far along a status is. Final statuses rank from FINAL_RANK up; among
# them a later outcome beats an earlier one only when the worker was lost.
STATUS_RANK = {
    "pending": 0, "received": 1, "started": 2, "retry": 3,
    "cancelled": 10, "failure": 11, "success": 12,
}
FINAL_RANK = 10
STATE_RANK = {state: STATUS_RANK[status] for state, status in STATE_TO_STATUS.items()}

# What an operator may do in which state (SPEC §4)
CANCELLABLE = frozenset({"PENDING", "RECEIVED", "STARTED"})
RETRYABLE = frozenset({"FAILURE", "REVOKED"})


def advances(cur: str | None, cur_at: float | None, cur_lost: bool,
             new: str | None, new_at: float | None) -> bool:
    """Does status ``new`` (at ``new_at``) replace ``cur``? Statuses are ours
    (``success``, ``cancelled``...), not Celery's names. The SQL twin is
    ``automation.status_advances``."""
    if new is None:
        return False
    if cur is None:
        return True
    cur_rank, new_rank = STATUS_RANK[cur], STATUS_RANK[new]
    if cur_rank >= FINAL_RANK:
        later = new_at is not None and cur_at is not None and new_at > cur_at
        return (cur_lost and later) or new_rank > cur_rank
    if new_rank >= FINAL_RANK:
        return True
    if new == "retry" or cur == "retry":
        if new_at is None:
            return False
        return cur_at is None or new_at > cur_at
    return new_rank > cur_rank


def further_state(a: str, b: str) -> str:
    """Of two Celery states of one task, the one further along (``a`` on a tie)."""
    return b if STATE_RANK.get(b, -1) > STATE_RANK.get(a, -1) else a


def as_json() -> dict[str, Any]:
    """The lifecycle for the dashboard's script."""
    return {"states": list(TASK_STATES), "final": sorted(FINAL_STATES),
            "cancellable": sorted(CANCELLABLE), "retryable": sorted(RETRYABLE)}
