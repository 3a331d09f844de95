"""Closing gaps: rows that are not final, checked against the result backend.

Events are fire-and-forget, so a row can miss its ending. For every open row
(settled for a moment, so live events win the race) we read the task's meta
from the result backend, many keys per round trip where the backend allows:

- the backend knows a state (SUCCESS, FAILURE, REVOKED, or a later open one):
  it goes through the same guarded merge as an event (result, error and
  traceback included), so reconciliation can never move a row backwards;
- the backend knows nothing, the row is ``started`` and its worker is gone
  (said goodbye, or no heartbeat for ``worker_lost_seconds``): nobody will
  finish it, so it becomes ``failure`` with a ``WorkerLostError`` error and
  ``worker_lost = true``. Should the task be redelivered and run after all,
  its later events still advance the row.

Rows the backend does not know and whose worker is alive (queued, running)
are left alone.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import states

from sync_worker.receiver import WorkerLiveness, _epoch
from sync_worker.store import OpenExecution, PgExecutionStore
from sync_worker.transitions import Transition, fold

logger = logging.getLogger(__name__)

_TIME_FIELD = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked",
               "STARTED": "started", "RETRY": "retried", "RECEIVED": "received"}


@dataclass
class ReconcileReport:
    checked: int = 0
    from_backend: int = 0
    worker_lost: int = 0
    changed: int = 0


def _error_text(result: Any) -> str | None:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            inner = ", ".join(repr(part) for part in message)
        else:
            inner = repr(message)
        return f"{result['exc_type']}({inner})"
    if isinstance(result, BaseException):
        return repr(result)
    return None if result is None else str(result)


def transition_from_meta(task_id: str, meta: dict[str, Any], *,
                         now: float) -> Transition | None:
    """Our ``Transition`` for a result backend meta dict; None if it says nothing."""
    state = meta.get("status")
    if state not in _TIME_FIELD:
        return None
    when = _epoch(meta.get("date_done")) or now
    fields: dict[str, Any] = {}
    if meta.get("worker"):
        fields["worker"] = meta["worker"]
    if meta.get("name"):
        fields["task_name"] = meta["name"]
    if meta.get("queue"):
        fields["queue"] = meta["queue"]
    if isinstance(meta.get("retries"), int):
        fields["retries"] = meta["retries"]
    if state == states.SUCCESS:
        fields["result"] = meta.get("result")
    elif state in (states.FAILURE, states.RETRY, states.REVOKED):
        fields["error"] = _error_text(meta.get("result"))
        fields["traceback"] = meta.get("traceback")
    elif state == states.STARTED and isinstance(meta.get("result"), dict):
        fields["worker"] = meta["result"].get("hostname") or fields.get("worker")
    return Transition(task_id, state, when, _TIME_FIELD[state], fields, source="reconcile")


class BackendReader:
    """Task metas from a Celery result backend, batched when it can ``mget``."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def metas(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        backend = self._backend
        found: dict[str, dict[str, Any]] = {}
        if hasattr(backend, "mget") and hasattr(backend, "get_key_for_task"):
            keys = [backend.get_key_for_task(task_id) for task_id in task_ids]
            for task_id, raw in zip(task_ids, backend.mget(keys)):
                if raw:
                    found[task_id] = backend.decode_result(raw)
            return found
        for task_id in task_ids:
            meta = backend.get_task_meta(task_id)
            if meta and meta.get("status") != states.PENDING:
                found[task_id] = meta
        return found


class Reconciler:
    def __init__(self, *, store: PgExecutionStore, backend_reader: Callable[[], BackendReader],
                 liveness: WorkerLiveness, batch_size: int = 500,
                 settle_seconds: float = 2.0, worker_lost_seconds: float = 60.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._reader = backend_reader
        self._liveness = liveness
        self._batch_size = batch_size
        self._settle = settle_seconds
        self._lost_after = worker_lost_seconds
        self._on_batch = on_batch

    def run_once(self, *, should_stop: Callable[[], bool] = lambda: False) -> ReconcileReport:
        """Walk every open row once. Raises the store's/backend's connection
        errors; the caller's loop backs off."""
        report = ReconcileReport()
        after: str | None = None
        reader = self._reader()
        while not should_stop():
            rows = self._store.open_executions(after_id=after, limit=self._batch_size,
                                               settled_seconds=self._settle)
            if not rows:
                break
            after = rows[-1].task_id
            self._reconcile_batch(rows, reader, report)
            if len(rows) < self._batch_size:
                break
        if report.changed:
            logger.info("reconciled %d of %d open rows (%d from the backend, %d worker lost)",
                        report.changed, report.checked, report.from_backend,
                        report.worker_lost)
        return report

    def _reconcile_batch(self, rows: list[OpenExecution], reader: BackendReader,
                         report: ReconcileReport) -> None:
        now = time.time()
        metas = reader.metas([row.task_id for row in rows])
        transitions: list[Transition] = []
        for row in rows:
            report.checked += 1
            meta = metas.get(row.task_id)
            transition = transition_from_meta(row.task_id, meta, now=now) if meta else None
            if transition is not None and transition.state in states.READY_STATES:
                transitions.append(transition)
                report.from_backend += 1
            elif row.status == "started" and self._liveness.is_lost(
                    row.worker, lost_after_seconds=self._lost_after):
                # the backend may still say STARTED: the dead worker wrote that
                transitions.append(Transition(
                    row.task_id, "FAILURE", now, "failed",
                    {"error": f"WorkerLostError('Worker {row.worker} went away while the task "
                              "was running; no result was recorded')",
                     "worker_lost": True, "reason": "worker_lost"},
                    source="reconcile"))
                report.worker_lost += 1
            elif transition is not None:
                transitions.append(transition)   # an open state that may move the row on
                report.from_backend += 1
        if transitions:
            changed = self._store.apply(fold(transitions).values(), transitions)
            report.changed += changed
            if self._on_batch is not None:
                self._on_batch(changed)
