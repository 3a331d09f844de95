"""Cancel, answered with what happened (SPEC §4, §11 "Truth").

A cancel does not claim what it has not seen:

1. The database is checked first: one that cannot be reached fails the
   action before anything is sent (503).
2. The revoke goes out (markers, then the broadcast with ``terminate``); a
   broker that refuses it fails the action with nothing written (503).
3. Tasks still waiting in a queue are taken out of it where the broker
   allows (Redis): they can no longer run, so they are cancelled, now.
4. The others are watched in Flower's memory for up to
   ``confirm_seconds``: the worker's ``task-revoked`` (a discarded or a
   terminated task) confirms the cancel; a SUCCESS or FAILURE that came
   first means the task won the race, and the answer is a 409 with that
   state. A task that was only queued or reserved (PENDING, RECEIVED) and
   is still so when the time is up is cancelled: every worker has it in
   its revoked set and skips it. A running task that has not ended is
   ``requested`` (202): its process was signalled, the outcome is not
   known yet, and the feed will tell.
5. What was cancelled is recorded at once: in PostgreSQL (guarded: a row
   already final stays as it is, and then that is the answer), with history
   and audit, in one transaction; then in Flower's memory, so every view
   shows REVOKED from the answer on.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from flower_ops.core.errors import Unavailable
from flower_ops.core.lifecycle import FINAL_STATES, STATUS_TO_STATE
from flower_ops.core.outcomes import CANCELLED, REJECTED, REQUESTED
from flower_ops.db.actions import ActionStore, AuditRecord
from flower_ops.db.claims import cancelled_by_operator, lock_tasks
from flower_ops.monitor.services.action_lookup import TaskSnapshot
from flower_ops.monitor.services.audit import AuditTrail
from flower_ops.monitor.services.celery_gateway import CeleryGateway

logger = logging.getLogger(__name__)

QUEUED = frozenset({"PENDING", "RECEIVED"})
POLL_SECONDS = 0.05
# how long a task-revoked may still be overtaken by the task's own end
SETTLE_SECONDS = 0.5


class Cancellation:
    """Runs on the IOLoop; its blocking steps go through ``run_blocking``."""

    def __init__(self, *, gateway: CeleryGateway, store: ActionStore | None, audit: AuditTrail,
                 memory_states: Callable[[Iterable[str]], dict[str, str]],
                 record_revoked: Callable[[Iterable[str], float], None],
                 run_blocking: Callable[..., Awaitable[Any]],
                 confirm_seconds: float = 3.0) -> None:
        self.gateway = gateway
        self.store = store
        self.audit = audit
        self._memory_states = memory_states
        self._record_revoked = record_revoked
        self._run_blocking = run_blocking
        self.confirm_seconds = confirm_seconds

    async def run(self, snaps: Sequence[TaskSnapshot], subject: str) -> dict[str, dict[str, Any]]:
        """Cancel each of ``snaps`` (already allowed); one result per task id."""
        ids = [snap.id for snap in snaps]
        try:
            if self.store is not None:
                await self._run_blocking(self.store.ping)
            await self._run_blocking(self.gateway.revoke, ids)
        except Unavailable as exc:
            await self._run_blocking(self.audit.failed, subject, "cancel", ids, exc)
            raise
        queued = [snap for snap in snaps if snap.state == "PENDING"]
        removed: set[str] = await self._run_blocking(self.gateway.take_out_of_queues, queued)
        seen = await self._watch([i for i in ids if i not in removed])
        at = time.time()
        results: dict[str, dict[str, Any]] = {}
        cancelled: list[TaskSnapshot] = []
        for snap in snaps:
            state = "REVOKED" if snap.id in removed else seen.get(snap.id, snap.state)
            if state == "REVOKED" or state in QUEUED:
                cancelled.append(snap)
            elif state in FINAL_STATES:
                results[snap.id] = _finished_first(snap, state)
            else:
                results[snap.id] = {
                    "id": snap.id, "outcome": REQUESTED, "previous_state": snap.state,
                    "state": state, "terminate": True, "name": snap.name,
                    "message": "the task's process was sent SIGTERM; it has not ended yet "
                               f"(waited {self.confirm_seconds:g} s): the feed will tell"}
        results.update(await self._run_blocking(self._record, cancelled, results, at, subject))
        # Every view shows what is certain, from the answer on
        self._record_revoked([i for i, r in results.items() if r["outcome"] == CANCELLED], at)
        return results

    async def _watch(self, ids: list[str]) -> dict[str, str]:
        """Flower's memory until each of ``ids`` is final, or the time is up.

        A worker announces ``task-revoked`` when it signals the task's
        process, not when the process is gone: a task that returns in that
        instant also reports SUCCESS (or FAILURE), which Celery's state
        precedence lets win. So a REVOKED is read again ``SETTLE_SECONDS``
        later, and what memory says then is the answer.
        """
        deadline = time.monotonic() + self.confirm_seconds
        seen = self._memory_states(ids)
        while any(seen.get(i) not in FINAL_STATES for i in ids) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            seen = self._memory_states(ids)
        if any(state == "REVOKED" for state in seen.values()):
            await asyncio.sleep(SETTLE_SECONDS)
            seen = self._memory_states(ids)
        return seen

    def _record(self, cancelled: list[TaskSnapshot], others: dict[str, dict[str, Any]],
                at: float, subject: str) -> dict[str, dict[str, Any]]:
        """Blocking: rows, history and audit of the outcome, in one transaction."""
        results: dict[str, dict[str, Any]] = {}
        records: list[AuditRecord] = []
        try:
            with self._transaction() as tx:
                if tx is not None:   # one cancel per task across monitors
                    lock_tasks(tx.conn, "cancel", [snap.id for snap in cancelled])
                for snap in cancelled:
                    status = "cancelled"
                    if tx is not None and cancelled_by_operator(tx.conn, snap.id):
                        # Another request (another monitor) cancelled it first
                        results[snap.id] = _already_cancelled(snap)
                        records.append(AuditRecord(subject, "cancel", snap.id, REJECTED,
                                                   {"reason": "state", "state": "REVOKED"}))
                        continue
                    if tx is not None:
                        status = tx.mark_cancelled(
                            task_id=snap.id, at=at, subject=subject, name=snap.name,
                            args=snap.args, kwargs=snap.kwargs, args_exact=snap.args_exact,
                            queue=snap.queue, routing_key=snap.routing_key,
                            exchange=snap.exchange)
                    if status == "cancelled":
                        results[snap.id] = {
                            "id": snap.id, "outcome": CANCELLED, "previous_state": snap.state,
                            "state": "REVOKED", "terminate": True, "name": snap.name}
                        records.append(AuditRecord(subject, "cancel", snap.id, CANCELLED,
                                                   {"previous_state": snap.state}))
                    else:   # the database had its end first
                        results[snap.id] = _finished_first(
                            snap, STATUS_TO_STATE.get(status, status.upper()))
                for task_id, result in others.items():
                    records.append(AuditRecord(subject, "cancel", task_id, result["outcome"],
                                               {"reason": result.get("reason"),
                                                "state": result.get("state")}))
                self.audit.within(tx, records)
        except Unavailable:
            # The revoke went out and the cancel happened; only its record failed
            logger.warning("cancelled %d task(s) but could not record it in PostgreSQL; "
                           "the sync worker records the task-revoked events", len(cancelled),
                           exc_info=True)
            results = {snap.id: {
                "id": snap.id, "outcome": CANCELLED, "previous_state": snap.state,
                "state": "REVOKED", "terminate": True, "name": snap.name}
                for snap in cancelled}
            self.audit.best_effort(records)
        return results

    def _transaction(self) -> Any:
        if self.store is None:
            return _NoTransaction()
        return self.store.transaction()


def _finished_first(snap: TaskSnapshot, state: str) -> dict[str, Any]:
    return {"id": snap.id, "outcome": REJECTED, "reason": "state", "state": state,
            "previous_state": snap.state,
            "message": f"the task ended {state} before the cancel reached it"}


def _already_cancelled(snap: TaskSnapshot) -> dict[str, Any]:
    return {"id": snap.id, "outcome": REJECTED, "reason": "state", "state": "REVOKED",
            "previous_state": snap.state,
            "message": "the task was already cancelled by another request"}


class _NoTransaction:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
