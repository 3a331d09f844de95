"""Cancel and retry, one task or many: ``TaskActionService`` (no HTTP here).

Every action runs in three steps:

1. *Look up* each task: Flower's memory (on the IOLoop thread), the
   PostgreSQL row, and for what neither knows the result backend. The most
   advanced state wins (a row already ``cancelled`` beats a stale
   ``STARTED`` in memory).
2. *Decide* per task: allowed, 409 (state, already retried, arguments not
   exactly known) or 404. A dry run stops here.
3. *Do* it so that nothing is left half done: the database writes (row,
   history, audit) are made in a transaction that commits only after the
   broker accepted the revoke or the new task message; when the broker
   refuses, the transaction rolls back and the answer is 503. A database
   that cannot be reached fails the action before anything is sent.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from flower_ops.core.errors import Conflict, FlowerOpsError, NotConfigured, NotFound, Unavailable
from flower_ops.core.payload import decode_args, encode_exact
from flower_ops.revocations import RevocationMarkers
from flower_ops.monitor.sources.flower_state import task_queue
from flower_ops.db.actions import ActionStore, AuditRecord

if TYPE_CHECKING:
    from flower_ops.core.query import TaskQuery

logger = logging.getLogger(__name__)

CANCELLABLE = frozenset({"PENDING", "RECEIVED", "STARTED"})
RETRYABLE = frozenset({"FAILURE", "REVOKED"})
ACTIONS = ("cancel", "retry")
# How far along a task is; the higher state of memory and database wins.
_RANK = {"PENDING": 0, "RECEIVED": 1, "STARTED": 2, "RETRY": 3, "REVOKED": 10,
         "FAILURE": 11, "SUCCESS": 12}
_RETRIED_CACHE_SIZE = 10000


@dataclass(frozen=True)
class TaskSnapshot:
    """What an action knows about one task, from wherever it was found."""

    id: str
    state: str
    name: str | None = None
    args: Any = None
    kwargs: Any = None
    args_exact: bool = False
    queue: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    retried_as: str | None = None
    source: str = "memory"


@dataclass(frozen=True)
class Decision:
    snapshot: TaskSnapshot | None
    task_id: str
    outcome: str                    # allowed | conflict | not_found
    reason: str | None = None
    message: str | None = None


def snapshot_from_memory(task: Any) -> TaskSnapshot:
    args, args_exact = decode_args(getattr(task, "args", None))
    kwargs, kwargs_exact = decode_args(getattr(task, "kwargs", None))
    return TaskSnapshot(
        id=task.uuid, state=task.state or "PENDING", name=getattr(task, "name", None),
        args=args, kwargs=kwargs, args_exact=args_exact and kwargs_exact,
        queue=task_queue(task), routing_key=getattr(task, "routing_key", None),
        exchange=getattr(task, "exchange", None), source="memory")


def _merge(memory: TaskSnapshot | None, stored: TaskSnapshot | None) -> TaskSnapshot | None:
    if memory is None or stored is None:
        return memory or stored
    state = memory.state
    if _RANK.get(stored.state, -1) > _RANK.get(memory.state, -1):
        state = stored.state
    exact = memory if memory.args_exact or not stored.args_exact else stored
    return TaskSnapshot(
        id=memory.id, state=state, name=memory.name or stored.name, args=exact.args,
        kwargs=exact.kwargs, args_exact=exact.args_exact, queue=memory.queue or stored.queue,
        routing_key=memory.routing_key or stored.routing_key,
        exchange=memory.exchange or stored.exchange, retried_as=stored.retried_as,
        source="memory+db")


class TaskActionService:
    """Cancels and retries Celery tasks, audited, singly or in bulk."""

    def __init__(self, *, capp: Any, memory_lookup: Callable[[Sequence[str]], Mapping[str, Any]],
                 store: ActionStore | None, markers: RevocationMarkers,
                 run_blocking: Callable[..., Awaitable[Any]], max_tasks: int = 1000,
                 broker_timeout_seconds: float = 5.0) -> None:
        self.capp = capp
        self.store = store
        self.markers = markers
        self.max_tasks = max_tasks
        self._memory_lookup = memory_lookup
        self._run_blocking = run_blocking
        self._broker_timeout = broker_timeout_seconds
        # retry links when there is no database (and before it is read back)
        self._retried_as: OrderedDict[str, str] = OrderedDict()

    # -- public API ------------------------------------------------------------

    async def cancel(self, task_id: str, *, subject: str) -> dict[str, Any]:
        return _single(await self.run("cancel", [task_id], subject=subject))

    async def retry(self, task_id: str, *, subject: str, force: bool = False) -> dict[str, Any]:
        return _single(await self.run("retry", [task_id], subject=subject, force=force))

    async def run(self, action: str, task_ids: Sequence[str], *, subject: str,
                  dry_run: bool = False, force: bool = False) -> dict[str, Any]:
        """Apply ``action`` to each task; returns per-task outcomes in input order."""
        ids = list(OrderedDict.fromkeys(task_ids))
        snapshots = await self._snapshots(ids, need_exact_args=action == "retry")
        decisions = [self._decide(action, task_id, snapshots.get(task_id), force)
                     for task_id in ids]
        if dry_run:
            results = [self._dry_result(action, d) for d in decisions]
        else:
            results = await self._run_blocking(self._execute, action, decisions, subject)
        counts: dict[str, int] = {}
        for result in results:
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
        return {"action": action, "dry_run": dry_run, "requested": len(ids), "counts": counts,
                "results": results, "audit": "database" if self.store else "log"}

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
        return {"entries": entries, "next": next_cursor}

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

    # -- step 1: look up -----------------------------------------------------------

    async def _snapshots(self, ids: list[str], *,
                         need_exact_args: bool) -> dict[str, TaskSnapshot]:
        memory = {task_id: snapshot_from_memory(task)
                  for task_id, task in self._memory_lookup(ids).items()}
        stored: dict[str, TaskSnapshot] = {}
        if self.store is not None and ids:
            rows = await self._run_blocking(self.store.rows, ids)
            stored = {task_id: TaskSnapshot(
                id=row.id, state=row.state, name=row.name, args=row.args, kwargs=row.kwargs,
                args_exact=row.args_exact, queue=row.queue, routing_key=row.routing_key,
                exchange=row.exchange, retried_as=row.retried_as, source="db")
                for task_id, row in rows.items()}
        merged: dict[str, TaskSnapshot] = {}
        for task_id in ids:
            snapshot = _merge(memory.get(task_id), stored.get(task_id))
            if snapshot is not None:
                if snapshot.retried_as is None and task_id in self._retried_as:
                    snapshot = replace(snapshot, retried_as=self._retried_as[task_id])
                merged[task_id] = snapshot
        backend_ids = [task_id for task_id in ids if task_id not in merged
                       or (need_exact_args and not merged[task_id].args_exact)]
        if backend_ids:
            from_backend = await self._run_blocking(self._backend_snapshots, backend_ids)
            for task_id, snapshot in from_backend.items():
                known = merged.get(task_id)
                if known is None:
                    merged[task_id] = snapshot
                elif snapshot.args_exact:
                    merged[task_id] = replace(
                        known, args=snapshot.args, kwargs=snapshot.kwargs, args_exact=True,
                        name=known.name or snapshot.name, queue=known.queue or snapshot.queue)
        return merged

    def _backend_snapshots(self, ids: list[str]) -> dict[str, TaskSnapshot]:
        """The result backend's view; with ``result_extended`` it holds the
        task's name, queue and its real (deserialized) args and kwargs."""
        found: dict[str, TaskSnapshot] = {}
        backend = self.capp.backend
        for task_id in ids:
            try:
                meta = backend.get_task_meta(task_id)
            except Exception:
                logger.warning("result backend lookup failed for %s", task_id, exc_info=True)
                break
            state = meta.get("status")
            if not state or state == "PENDING":   # Celery says PENDING for unknown ids
                continue
            args, kwargs = meta.get("args"), meta.get("kwargs")
            exact = isinstance(args, (list, tuple)) and isinstance(kwargs, dict)
            found[task_id] = TaskSnapshot(
                id=task_id, state=str(state), name=meta.get("name"),
                args=list(args) if exact else None, kwargs=kwargs if exact else None,
                args_exact=exact, queue=meta.get("queue"), source="backend")
        return found

    # -- step 2: decide ----------------------------------------------------------------

    def _decide(self, action: str, task_id: str, snapshot: TaskSnapshot | None,
                force: bool) -> Decision:
        if snapshot is None:
            return Decision(None, task_id, "not_found", "unknown_task",
                            f"unknown task {task_id}")
        allowed = CANCELLABLE if action == "cancel" else RETRYABLE
        if snapshot.state not in allowed:
            return Decision(snapshot, task_id, "conflict", "state",
                            f"cannot {action} a task in state {snapshot.state}; allowed in "
                            f"{', '.join(sorted(allowed))}")
        if action == "retry":
            if snapshot.retried_as and not force:
                return Decision(snapshot, task_id, "conflict", "already_retried",
                                f"already retried as {snapshot.retried_as} "
                                "(send force=true to retry again)")
            if not snapshot.name:
                return Decision(snapshot, task_id, "conflict", "name_unknown",
                                "the task's name is not known")
            if not snapshot.args_exact:
                return Decision(snapshot, task_id, "conflict", "arguments_not_exact",
                                "the exact arguments are not known (instrument the publishing "
                                "app with flower_ops.instrument, or enable result_extended)")
        return Decision(snapshot, task_id, "allowed")

    def _dry_result(self, action: str, decision: Decision) -> dict[str, Any]:
        if decision.outcome != "allowed":
            return _refusal(decision)
        snapshot = decision.snapshot
        assert snapshot is not None  # allowed decisions always carry one
        return {"id": decision.task_id, "outcome": f"would_{action}", "state": snapshot.state,
                "name": snapshot.name, "queue": snapshot.queue}

    # -- step 3: do (blocking; runs on the plugin's executor) -----------------------

    def _execute(self, action: str, decisions: list[Decision], subject: str) -> list[dict[str, Any]]:
        allowed = [d for d in decisions if d.outcome == "allowed"]
        refused = [d for d in decisions if d.outcome != "allowed"]
        done: dict[str, dict[str, Any]] = {}
        if allowed:
            if action == "cancel":
                done = self._cancel_all(allowed, subject)
            else:
                done = self._retry_each(allowed, subject)
        results = []
        for decision in decisions:
            results.append(done[decision.task_id] if decision.task_id in done
                           else _refusal(decision))
        # Refusals are audited too: who tried what, and why it was refused.
        self._audit_best_effort([
            AuditRecord(subject, action, d.task_id, "rejected",
                        {"reason": d.reason, "state": d.snapshot.state if d.snapshot else None})
            for d in refused] + [
            AuditRecord(subject, action, r["id"], "rejected",
                        {"reason": r.get("reason"), "state": r.get("state")})
            for r in done.values() if r["outcome"] == "conflict"])
        return results

    def _cancel_all(self, decisions: list[Decision], subject: str) -> dict[str, dict[str, Any]]:
        at = time.time()
        results: dict[str, dict[str, Any]] = {}
        try:
            with self._transaction() as tx:
                to_revoke: list[str] = []
                for decision in decisions:
                    snap = decision.snapshot
                    assert snap is not None
                    status = "cancelled"
                    if tx is not None:
                        status = tx.mark_cancelled(
                            task_id=snap.id, at=at, subject=subject, name=snap.name,
                            args=snap.args, kwargs=snap.kwargs, args_exact=snap.args_exact,
                            queue=snap.queue, routing_key=snap.routing_key,
                            exchange=snap.exchange)
                    if status != "cancelled":   # it finished while we looked
                        results[snap.id] = {
                            "id": snap.id, "outcome": "conflict", "reason": "state",
                            "state": status.upper(), "message": "the task finished meanwhile"}
                        continue
                    to_revoke.append(snap.id)
                    results[snap.id] = {
                        "id": snap.id, "outcome": "cancelled", "previous_state": snap.state,
                        "state": "REVOKED", "status": "cancelled",
                        "terminate": True, "name": snap.name}
                records = [AuditRecord(subject, "cancel", task_id, "ok",
                                       {"previous_state": results[task_id]["previous_state"]})
                           for task_id in to_revoke]
                self._audit_in(tx, records)
                if to_revoke:
                    self._revoke(to_revoke)
        except Unavailable as exc:
            self._audit_error(subject, "cancel", decisions, exc)
            raise
        return results

    def _revoke(self, task_ids: list[str]) -> None:
        """Markers first (a worker that starts later still skips the task),
        then the broadcast. ``terminate`` is harmless for a queued task and
        covers one that started since we looked."""
        try:
            self.markers.add(task_ids)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
        try:
            with self._broker() as conn:
                self.capp.control.revoke(task_ids, terminate=True, signal="SIGTERM",
                                         connection=conn)
        except Unavailable:
            try:
                self.markers.discard(task_ids)
            except Exception:
                logger.warning("could not remove revoke markers", exc_info=True)
            raise

    def _retry_each(self, decisions: list[Decision], subject: str) -> dict[str, dict[str, Any]]:
        """One transaction per task: a failure halfway leaves every task
        either fully retried (message sent, rows linked, audited) or untouched."""
        results: dict[str, dict[str, Any]] = {}
        failure: Unavailable | None = None
        try:
            with self._broker() as conn:
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
                "id": decision.task_id, "outcome": "unavailable",
                "state": decision.snapshot.state if decision.snapshot else None,
                "message": failure.message, "detail": failure.detail}
        self._audit_error(subject, "retry", unavailable, failure)
        if not any(r["outcome"] == "retried" for r in results.values()):
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
                tx.record_retry(original_id=snap.id, original_state=snap.state, new_id=new_id,
                                at=at, subject=subject, name=snap.name, args=args,
                                kwargs=kwargs, queue=snap.queue, routing_key=snap.routing_key,
                                exchange=snap.exchange)
            self._audit_in(tx, [AuditRecord(subject, "retry", snap.id, "ok",
                                            {"new_id": new_id, "previous_state": snap.state})])
            self._publish(conn, snap, new_id, args, kwargs)
        self._remember_retry(snap.id, new_id)
        return {"id": snap.id, "outcome": "retried", "state": snap.state,
                "previous_state": snap.state, "new_id": new_id, "new_state": "PENDING",
                "retried_as": new_id, "name": snap.name, "queue": snap.queue}

    def _publish(self, conn: Any, snap: TaskSnapshot, new_id: str, args: list[Any],
                 kwargs: dict[str, Any]) -> None:
        options: dict[str, Any] = {}
        if snap.queue:
            options["queue"] = snap.queue
        if snap.exchange:
            options["exchange"] = snap.exchange
        if snap.routing_key:
            options["routing_key"] = snap.routing_key
        # The new run's events carry exact arguments even if this app is not
        # instrumented, so it can be retried exactly in turn.
        argsrepr, kwargsrepr = encode_exact(args), encode_exact(kwargs)
        if argsrepr is not None and kwargsrepr is not None:
            options.update(argsrepr=argsrepr, kwargsrepr=kwargsrepr)
        try:
            self.capp.send_task(snap.name, args=args, kwargs=kwargs, task_id=new_id,
                                connection=conn, add_to_parent=False, retry=True,
                                retry_policy={"max_retries": 2, "interval_start": 0,
                                              "interval_step": 0.2, "interval_max": 0.5},
                                **options)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc

    def _remember_retry(self, original_id: str, new_id: str) -> None:
        self._retried_as[original_id] = new_id
        self._retried_as.move_to_end(original_id)
        while len(self._retried_as) > _RETRIED_CACHE_SIZE:
            self._retried_as.popitem(last=False)

    # -- collaborators ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.store is None:
            yield None
            return
        with self.store.transaction() as tx:
            yield tx

    @contextmanager
    def _broker(self) -> Iterator[Any]:
        """A connection from the app's pool (never one per request), checked
        within ``broker_timeout_seconds``; broker errors become ``Unavailable``."""
        try:
            pooled = self.capp.pool.acquire(block=True, timeout=self._broker_timeout)
        except Exception as exc:
            raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
        with pooled as conn:  # an error inside replaces the connection in the pool
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                       interval_max=0.2, timeout=self._broker_timeout)
            except Exception as exc:
                raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc
            try:
                yield conn
            except FlowerOpsError:
                raise
            except Exception as exc:  # the broker dropped us mid-way
                raise Unavailable("broker unavailable", {"reason": str(exc)[:300]}) from exc

    def _audit_in(self, tx: Any, records: list[AuditRecord]) -> None:
        if tx is not None:
            tx.audit(records)
        else:
            for r in records:
                logger.info("audit: %s %s %s -> %s %s", r.subject, r.action, r.task_id,
                            r.outcome, r.detail)

    def _audit_best_effort(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        if self.store is None:
            self._audit_in(None, records)
            return
        try:
            self.store.audit(records)
        except Exception:
            logger.warning("could not write %d audit record(s)", len(records), exc_info=True)

    def _audit_error(self, subject: str, action: str, decisions: list[Decision],
                     error: Unavailable) -> None:
        self._audit_best_effort([AuditRecord(subject, action, d.task_id, "error",
                                             {"reason": error.message, "detail": error.detail})
                                 for d in decisions])


def _refusal(decision: Decision) -> dict[str, Any]:
    return {"id": decision.task_id, "outcome": decision.outcome, "reason": decision.reason,
            "message": decision.message,
            "state": decision.snapshot.state if decision.snapshot else None,
            "retried_as": decision.snapshot.retried_as if decision.snapshot else None}


def _single(report: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = report["results"][0]
    outcome = result["outcome"]
    if outcome == "not_found":
        raise NotFound(result["message"], {"task_id": result["id"]})
    if outcome == "conflict":
        raise Conflict(result["message"], {key: result.get(key) for key in
                                           ("id", "state", "reason", "retried_as")})
    if outcome == "unavailable":
        raise Unavailable(result["message"], result.get("detail"))
    return {**result, "audit": report["audit"]}
