"""Our own value types. Library objects (Celery ``Task``, psycopg rows) are
converted into these at the adapter boundary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TASK_STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

# Celery state <-> automation.job_executions.status (SPEC §8)
STATE_TO_STATUS = {
    "PENDING": "pending", "RECEIVED": "received", "STARTED": "started",
    "SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry", "REVOKED": "cancelled",
}
STATUS_TO_STATE = {status: state for state, status in STATE_TO_STATUS.items()}

# Lifecycle timestamps, in the order a task goes through them.
TIMESTAMP_FIELDS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")


@dataclass(frozen=True)
class TaskQuery:
    """Filters, order and page of a task listing (``GET /tasks``)."""

    states: frozenset[str] = frozenset()
    name: str | None = None
    worker: str | None = None
    queue: str | None = None
    search: str | None = None
    since: float | None = None      # epoch seconds, inclusive
    until: float | None = None      # epoch seconds, exclusive
    limit: int = 50
    cursor: str | None = None
    order: str = "desc"             # newest first by default
    source: str = "auto"            # auto | memory | db


@dataclass(frozen=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    total: int
    next: str | None
    source: str = "memory"
    extra: dict[str, Any] = field(default_factory=dict)
