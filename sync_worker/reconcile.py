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
  its later events still advance the row;
- the same when the worker's hostname is alive but the worker, asked
  (``query_task``, one broadcast per batch), no longer knows the task: it was
  killed and restarted under the same name (a container restart keeps the
  hostname), so its heartbeats never stopped for long. The backend is read
  again after the answer, so a task that finished meanwhile keeps its result.

Rows the backend does not know and whose worker is alive and still has the
task (queued, running), or did not answer, are left alone.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import states

from flower_ops.core.lifecycle import advances
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import OpenExecution, PgExecutionStore
from sync_worker.events import to_epoch
from sync_worker.liveness import WorkerLiveness

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
    when = to_epoch(meta.get("date_done")) or now
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
            for task_id, raw in zip(task_ids, backend.mget(keys), strict=True):
                if raw:
                    found[task_id] = backend.decode_result(raw)
            return found
        for task_id in task_ids:
            meta = backend.get_task_meta(task_id)
            if meta and meta.get("status") != states.PENDING:
                found[task_id] = meta
        return found


# hostnames, task ids -> {hostname: ids it knows} for the workers that answered
TasksKnownByWorkers = Callable[[Sequence[str], Sequence[str]], Mapping[str, set[str]]]


def _moves_on(row: OpenExecution, transition: Transition) -> bool:
    """Does an open state read from the backend tell the row anything new?
    A long-running task reads STARTED on every pass; applying it each time
    would add a history entry per pass (its time is the read time)."""
    status = transition.status
    return status != row.status and advances(row.status, row.status_at, False,
                                             status, transition.timestamp)


def _lost_transition(task_id: str, now: float, message: str) -> Transition:
    return Transition(task_id, "FAILURE", now, "failed",
                      {"error": f"WorkerLostError('{message}; no result was recorded')",
                       "worker_lost": True, "reason": "worker_lost"},
                      source="reconcile")


class Reconciler:
    def __init__(self, *, store: PgExecutionStore, backend_reader: Callable[[], BackendReader],
                 liveness: WorkerLiveness, batch_size: int = 500,
                 settle_seconds: float = 2.0, worker_lost_seconds: float = 60.0,
                 on_batch: Callable[[int], None] | None = None,
                 tasks_known_by_workers: TasksKnownByWorkers | None = None) -> None:
        self._ask_workers = tasks_known_by_workers
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
        running_on_live_workers: list[OpenExecution] = []
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
                transitions.append(_lost_transition(
                    row.task_id, now, f"Worker {row.worker} went away while the task was "
                                      "running"))
                report.worker_lost += 1
            else:
                if row.status == "started" and row.worker:
                    running_on_live_workers.append(row)
                if transition is not None and _moves_on(row, transition):
                    transitions.append(transition)   # an open state that moves the row on
                    report.from_backend += 1
        if running_on_live_workers:
            transitions += self._forgotten_by_workers(running_on_live_workers, reader, report)
        if transitions:
            changed = self._store.apply(fold(transitions).values(), transitions)
            report.changed += changed
            if self._on_batch is not None:
                self._on_batch(changed)

    def _forgotten_by_workers(self, rows: list[OpenExecution], reader: BackendReader,
                              report: ReconcileReport) -> list[Transition]:
        """Lost transitions for started rows whose (live) worker, asked, does
        not know the task any more: an earlier incarnation of that hostname
        ran it and died."""
        if self._ask_workers is None:
            return []
        hostnames = sorted({row.worker for row in rows if row.worker})
        try:
            known = self._ask_workers(hostnames, [row.task_id for row in rows])
        except Exception as exc:  # noqa: BLE001 - no answer is no evidence: next pass
            logger.warning("could not ask workers about their running tasks: %s", exc)
            return []
        forgotten = [row for row in rows
                     if row.worker and row.worker in known
                     and row.task_id not in known[row.worker]]
        if not forgotten:
            return []
        # it may have finished between the first read and the answer
        metas = reader.metas([row.task_id for row in forgotten])
        now = time.time()
        transitions: list[Transition] = []
        for row in forgotten:
            meta = metas.get(row.task_id)
            transition = transition_from_meta(row.task_id, meta, now=now) if meta else None
            if transition is not None and transition.state in states.READY_STATES:
                transitions.append(transition)
                report.from_backend += 1
                continue
            transitions.append(_lost_transition(
                row.task_id, now, f"Worker {row.worker} no longer runs the task: it was "
                                  "restarted or lost it while the task was running"))
            report.worker_lost += 1
        return transitions
