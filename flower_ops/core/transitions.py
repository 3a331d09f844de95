"""What one task looks like to the sync worker's writer: transitions and
their folding.

Celery events (``sync_worker/events.py``) and result-backend reads
(reconciliation, discovery) become ``Transition``s; ``fold`` turns all
transitions of one task within a batch into one ``TaskDelta`` (so a batch
touches each row once); ``db/batch.py`` merges deltas into rows with the same
guard in SQL (``automation.status_advances``), whose Python twin is
``lifecycle.advances``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flower_ops.core.lifecycle import STATE_TO_STATUS, advances

# "not known", which None cannot say: a task may return None
MISSING: Any = object()


@dataclass(slots=True)
class Transition:
    """One observed state change of one task (an event, or a backend read)."""

    task_id: str
    state: str                       # Celery state name
    timestamp: float                 # epoch seconds, when it happened
    time_field: str | None = None    # lifecycle timestamp it sets: sent, started...
    fields: dict[str, Any] = field(default_factory=dict)
    source: str = "event"            # event | reconcile | operator

    @property
    def status(self) -> str:
        return STATE_TO_STATUS[self.state]


# Descriptive fields: the first known value sticks.
STICKY_FIELDS = ("task_name", "queue", "routing_key", "exchange", "parent_id", "root_id",
                 "eta", "expires", "trace_id", "workflow_id", "canvas", "links")
# Outcome fields: they belong to the status that carried them.
OUTCOME_FIELDS = ("result", "error", "traceback", "runtime")


@dataclass(slots=True)
class TaskDelta:
    """Everything one batch knows about one task, merged by the guard."""

    task_id: str
    status: str | None = None
    status_at: float | None = None
    worker_lost: bool = False
    task_name: str | None = None
    args: Any = MISSING
    kwargs: Any = MISSING
    args_exact: bool = False
    result: Any = MISSING
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    queue: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    retries: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    eta: float | None = None
    expires: float | None = None
    runtime: float | None = None
    trace_id: str | None = None
    workflow_id: str | None = None
    canvas: Any = None
    links: Any = None
    times: dict[str, float] = field(default_factory=dict)
    reconciled_at: float | None = None

    def absorb(self, transition: Transition) -> None:
        time_field = transition.time_field
        status = transition.status
        ts = transition.timestamp
        fields = transition.fields
        if time_field is not None:
            old = self.times.get(time_field)
            if old is None or ts < old:
                self.times[time_field] = ts
        for name in STICKY_FIELDS:
            value = fields.get(name)
            if value is not None and getattr(self, name) is None:
                setattr(self, name, value)
        if "args" in fields or "kwargs" in fields:
            exact = bool(fields.get("args_exact"))
            if self.args is MISSING or (exact and not self.args_exact):
                self.args = fields.get("args")
                self.kwargs = fields.get("kwargs")
                self.args_exact = exact
        retries = fields.get("retries")
        if isinstance(retries, int) and retries > self.retries:
            self.retries = retries
        lost = bool(fields.get("worker_lost"))
        if advances(self.status, self.status_at, self.worker_lost, status, ts):
            self.status, self.status_at, self.worker_lost = status, ts, lost
            if fields.get("worker"):
                self.worker = fields["worker"]
            if status == "success":
                self.error = self.traceback = None
            for name in OUTCOME_FIELDS:
                # a task may return None: a present "result" key always counts
                if name in fields and (fields[name] is not None or name == "result"):
                    setattr(self, name, fields[name])
        else:
            if self.worker is None and fields.get("worker"):
                self.worker = fields["worker"]
            if status == self.status:
                for name in OUTCOME_FIELDS:
                    current = getattr(self, name)
                    if (current is None or current is MISSING) and name in fields:
                        setattr(self, name, fields[name])
        if transition.source == "reconcile":
            self.reconciled_at = max(self.reconciled_at or 0.0, ts)

    @property
    def first_seen(self) -> float | None:
        """When the task was sent, once known (memory lists by it too: a
        worker's received can read earlier than sent, which the client
        stamps after publishing); else the earliest instant seen."""
        if self.times.get("sent") is not None:
            return self.times["sent"]
        candidates = list(self.times.values())
        if self.status_at is not None:
            candidates.append(self.status_at)
        return min(candidates) if candidates else None


def fold(transitions: Iterable[Transition]) -> dict[str, TaskDelta]:
    """Fold transitions, in arrival order, into one delta per task id."""
    deltas: dict[str, TaskDelta] = {}
    for transition in transitions:
        delta = deltas.get(transition.task_id)
        if delta is None:
            delta = deltas[transition.task_id] = TaskDelta(transition.task_id)
        delta.absorb(transition)
    return deltas
