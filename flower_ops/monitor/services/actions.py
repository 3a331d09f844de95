"""Cancel and retry, one task or many: ``TaskActionService`` (no HTTP here).

Every action runs in three steps:

1. *Look up* each task (``action_lookup.TaskLookup``): Flower's memory, the
   PostgreSQL row, the result backend; the state further along wins.
2. *Decide* per task: allowed, 409 (state, already retried, arguments not
   exactly known) or 404. A dry run stops here.
3. *Do* it (here, with ``celery_gateway.CeleryGateway`` for the broker) so
   that nothing is left half done: the database writes (row, history,
   audit) are made in a transaction that commits only after the broker
   accepted the revoke or the new task message; when the broker
   refuses, the transaction rolls back and the answer is 503. A database
   that cannot be reached fails the action before anything is sent.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

from flower_ops.core.errors import Conflict, NotConfigured, NotFound, Unavailable
from flower_ops.core.lifecycle import CANCELLABLE, RETRYABLE
from flower_ops.core.outcomes import NOT_FOUND, REJECTED, RETRIED, UNAVAILABLE
from flower_ops.core.query import TaskQuery
from flower_ops.core.times import with_times
from flower_ops.db.actions import ActionStore, AuditRecord
from flower_ops.db.claims import lock_tasks, retried_as
from flower_ops.monitor.services.action_lookup import Decision, TaskLookup, TaskSnapshot
from flower_ops.monitor.services.audit import AuditTrail
from flower_ops.monitor.services.cancellation import Cancellation
from flower_ops.monitor.services.celery_gateway import CeleryGateway

logger = logging.getLogger(__name__)

ACTIONS = ("cancel", "retry")


class TaskActionService:
    """Cancels and retries Celery tasks, audited, singly or in bulk."""

    def __init__(self, *, lookup: TaskLookup, gateway: CeleryGateway, store: ActionStore | None,
                 cancellation: Cancellation, audit: AuditTrail,
                 run_blocking: Callable[..., Awaitable[Any]], max_tasks: int = 1000) -> None:
        self.lookup = lookup
        self.gateway = gateway
        self.store = store
        self.cancellation = cancellation
        self.audit = audit
        self.max_tasks = max_tasks
        self._run_blocking = run_blocking

    # -- public API ------------------------------------------------------------

    async def cancel(self, task_id: str, *, subject: str) -> dict[str, Any]:
        return _single(await self.run("cancel", [task_id], subject=subject))

    async def retry(self, task_id: str, *, subject: str, force: bool = False) -> dict[str, Any]:
        return _single(await self.run("retry", [task_id], subject=subject, force=force))

    async def run(self, action: str, task_ids: Sequence[str], *, subject: str,
                  dry_run: bool = False, force: bool = False) -> dict[str, Any]:
        """Apply ``action`` to each task; returns per-task outcomes in input order."""
        ids = list(OrderedDict.fromkeys(task_ids))
        snapshots = await self.lookup.snapshots(ids, need_exact_args=action == "retry")
        decisions = [self.lookup.decide(action, task_id, snapshots.get(task_id), force)
                     for task_id in ids]
        if dry_run:
            results = [self._dry_result(action, d) for d in decisions]
        else:
            results = await self._execute(action, decisions, subject)
        counts: dict[str, int] = {}
        for result in results:
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        return {"action": action, "dry_run": dry_run, "requested": len(ids), "counts": counts,
                "results": results, "audit": self.audit.where}

    async def audit_log(self, *, task_id: str | None, subject: str | None,
                        action: str | None, before_id: int | None,
                        limit: int) -> dict[str, Any]:
        if self.store is None:
            raise NotConfigured("the audit log needs DATABASE_URL",
                                {"setting": "DATABASE_URL"})
        entries = await self._run_blocking(partial(
            self.store.audit_entries, task_id=task_id, subject=subject, action=action,
            before_id=before_id, limit=limit))
        next_cursor = str(entries[-1]["id"]) if len(entries) == limit else None
        return {"entries": [with_times(e, instants=("timestamp",)) for e in entries],
                "next": next_cursor}

    async def select(self, action: str, query: TaskQuery, *, list_tasks: Callable[
            [TaskQuery], Awaitable[Any]], limit: int) -> tuple[list[str], str | None]:
        """Ids of up to ``limit`` tasks matching a ``GET /tasks`` query, narrowed
        to the states ``action`` applies to; and the cursor of the rest."""
        allowed = CANCELLABLE if action == "cancel" else RETRYABLE
        states = (query.states & allowed) if query.states else allowed
        if not states:
            return [], None
        ids: list[str] = []
        cursor = query.cursor
        while len(ids) < limit:
            page_query = replace(query, states=frozenset(states), cursor=cursor,
                                 limit=min(1000, limit - len(ids)))
            page = await list_tasks(page_query)
            ids.extend(task["id"] for task in page.tasks)
            cursor = page.next
            if not cursor or not page.tasks:
                break
        return ids[:limit], cursor

    def _dry_result(self, action: str, decision: Decision) -> dict[str, Any]:
        if decision.outcome != "allowed":
            return _refusal(decision)
        snapshot = decision.snapshot
        assert snapshot is not None  # allowed decisions always carry one
        return {"id": decision.task_id, "outcome": f"would_{action}", "state": snapshot.state,
                "name": snapshot.name, "queue": snapshot.queue}

    # -- step 3: do -----------------------------------------------------------------

    async def _execute(self, action: str, decisions: list[Decision],
                       subject: str) -> list[dict[str, Any]]:
        allowed = [d for d in decisions if d.outcome == "allowed"]
        refused = [d for d in decisions if d.outcome != "allowed"]
        done: dict[str, dict[str, Any]] = {}
        if allowed and action == "cancel":
            done = await self.cancellation.run(
                [d.snapshot for d in allowed if d.snapshot is not None], subject)
        elif allowed:
            done = await self._run_blocking(self._retry_each, allowed, subject)
        results = [done[d.task_id] if d.task_id in done else _refusal(d) for d in decisions]
        # Refusals are audited too: who tried what, and why it was refused
        # (a cancel records its own outcomes, races lost included).
        records = [AuditRecord(subject, action, d.task_id, d.outcome,
                               {"reason": d.reason,
                                "state": d.snapshot.state if d.snapshot else None})
                   for d in refused]
        if action == "retry":
            records += [AuditRecord(subject, action, r["id"], REJECTED,
                                    {"reason": r.get("reason"), "state": r.get("state")})
                        for r in done.values() if r["outcome"] == REJECTED]
        if records:
            await self._run_blocking(self.audit.best_effort, records)
        return results

    def _retry_each(self, decisions: list[Decision], subject: str) -> dict[str, dict[str, Any]]:
        """One transaction per task: a failure halfway leaves every task
        either fully retried (message sent, rows linked, audited) or untouched."""
        results: dict[str, dict[str, Any]] = {}
        failure: Unavailable | None = None
        try:
            with self.gateway.connection() as conn:
                for decision in decisions:
                    snap = decision.snapshot
                    assert snap is not None
                    results[snap.id] = self._retry_one(snap, subject, conn)
        except Unavailable as exc:
            failure = exc
        if failure is None:
            return results
        unavailable = [d for d in decisions if d.task_id not in results]
        for decision in unavailable:
            results[decision.task_id] = {
                "id": decision.task_id, "outcome": UNAVAILABLE,
                "state": decision.snapshot.state if decision.snapshot else None,
                "message": failure.message, "detail": failure.detail}
        self.audit.failed(subject, "retry", [d.task_id for d in unavailable], failure)
        if not any(r["outcome"] == RETRIED for r in results.values()):
            raise failure
        return results

    def _retry_one(self, snap: TaskSnapshot, subject: str, conn: Any) -> dict[str, Any]:
        new_id = str(uuid.uuid4())
        at = time.time()
        assert snap.name is not None
        args = list(snap.args or [])
        kwargs = dict(snap.kwargs or {})
        with self._transaction() as tx:
            if tx is not None:
                # One retry of a task across monitors: the second waits here
                # for the first's transaction, then finds it retried
                lock_tasks(tx.conn, "retry", [snap.id])
                current = retried_as(tx.conn, snap.id)
                if current is not None and current != snap.retried_as:
                    return _already_retried(snap, current)
                tx.record_retry(original_id=snap.id, original_state=snap.state, new_id=new_id,
                                at=at, subject=subject, name=snap.name, args=args,
                                kwargs=kwargs, queue=snap.queue, routing_key=snap.routing_key,
                                exchange=snap.exchange)
            self.audit.within(tx, [AuditRecord(subject, "retry", snap.id, RETRIED,
                                               {"new_id": new_id,
                                                "previous_state": snap.state})])
            self.gateway.publish(conn, snap, new_id, args, kwargs)
        self.lookup.remember_retry(snap.id, new_id)
        return {"id": snap.id, "outcome": RETRIED, "state": snap.state,
                "previous_state": snap.state, "new_id": new_id, "new_state": "PENDING",
                "retried_as": new_id, "name": snap.name, "queue": snap.queue}

    # -- collaborators ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.store is None:
            yield None
            return
        with self.store.transaction() as tx:
            yield tx


def _already_retried(snap: TaskSnapshot, new_id: str) -> dict[str, Any]:
    return {"id": snap.id, "outcome": REJECTED, "reason": "already_retried",
            "message": f"already retried as {new_id} (send force=true to retry again)",
            "state": snap.state, "retried_as": new_id}


def _refusal(decision: Decision) -> dict[str, Any]:
    return {"id": decision.task_id, "outcome": decision.outcome, "reason": decision.reason,
            "message": decision.message,
            "state": decision.snapshot.state if decision.snapshot else None,
            "retried_as": decision.snapshot.retried_as if decision.snapshot else None}


def _single(report: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = report["results"][0]
    outcome = result["outcome"]
    if outcome == NOT_FOUND:
        raise NotFound(result["message"], {"task_id": result["id"]})
    if outcome == REJECTED:
        raise Conflict(result["message"], {key: result.get(key) for key in
                                           ("id", "state", "reason", "retried_as")})
    if outcome == UNAVAILABLE:
        raise Unavailable(result["message"], result.get("detail"))
    return {**result, "audit": report["audit"]}
