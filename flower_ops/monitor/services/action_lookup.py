"""Step 1 and 2 of an action: look each task up, then decide.

A task is looked up in Flower's memory (on the IOLoop thread), in its
PostgreSQL row, and, for what neither knows or when exact arguments are
missing, in the result backend. The state further along wins (a row already
``cancelled`` beats a stale ``STARTED`` in memory): ``lifecycle.further_state``.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from flower_ops.core.lifecycle import CANCELLABLE, RETRYABLE, api_state, further_state
from flower_ops.core.outcomes import NOT_FOUND, REJECTED
from flower_ops.db.actions import ActionStore
from flower_ops.monitor.sources.flower_state import task_arguments, task_queue

logger = logging.getLogger(__name__)

RETRIED_CACHE_SIZE = 10000


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
    args, kwargs, exact = task_arguments(task)
    return TaskSnapshot(
        id=task.uuid, state=api_state(task.state or "PENDING"), name=getattr(task, "name", None),
        args=args, kwargs=kwargs, args_exact=exact,
        queue=task_queue(task), routing_key=getattr(task, "routing_key", None),
        exchange=getattr(task, "exchange", None), source="memory")


def _merge(memory: TaskSnapshot | None, stored: TaskSnapshot | None) -> TaskSnapshot | None:
    if memory is None or stored is None:
        return memory or stored
    # How far along a task is: the further state of memory and database wins.
    state = further_state(memory.state, stored.state)
    exact = memory if memory.args_exact or not stored.args_exact else stored
    return TaskSnapshot(
        id=memory.id, state=state, name=memory.name or stored.name, args=exact.args,
        kwargs=exact.kwargs, args_exact=exact.args_exact, queue=memory.queue or stored.queue,
        routing_key=memory.routing_key or stored.routing_key,
        exchange=memory.exchange or stored.exchange, retried_as=stored.retried_as,
        source="memory+db")


class TaskLookup:
    """Finds what an action needs to know about tasks, and decides."""

    def __init__(self, *, capp: Any, memory_lookup: Callable[[Sequence[str]], Mapping[str, Any]],
                 store: ActionStore | None,
                 run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.capp = capp
        self.store = store
        self._memory_lookup = memory_lookup
        self._run_blocking = run_blocking
        # retry links when there is no database (and before it is read back)
        self._retried_as: OrderedDict[str, str] = OrderedDict()

    async def snapshots(self, ids: list[str], *,
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

    @staticmethod
    def decide(action: str, task_id: str, snapshot: TaskSnapshot | None,
                force: bool) -> Decision:
        if snapshot is None:
            return Decision(None, task_id, NOT_FOUND, "unknown_task",
                            f"unknown task {task_id}")
        allowed = CANCELLABLE if action == "cancel" else RETRYABLE
        if snapshot.state not in allowed:
            return Decision(snapshot, task_id, REJECTED, "state",
                            f"cannot {action} a task in state {snapshot.state}; allowed in "
                            f"{', '.join(sorted(allowed))}")
        if action == "retry":
            if snapshot.retried_as and not force:
                return Decision(snapshot, task_id, REJECTED, "already_retried",
                                f"already retried as {snapshot.retried_as} "
                                "(send force=true to retry again)")
            if not snapshot.name:
                return Decision(snapshot, task_id, REJECTED, "name_unknown",
                                "the task's name is not known")
            if not snapshot.args_exact:
                return Decision(snapshot, task_id, REJECTED, "arguments_not_exact",
                                "the exact arguments are not known (instrument the publishing "
                                "app with flower_ops.instrument, or enable result_extended)")
        return Decision(snapshot, task_id, "allowed")

    def remember_retry(self, original_id: str, new_id: str) -> None:
        self._retried_as[original_id] = new_id
        self._retried_as.move_to_end(original_id)
        while len(self._retried_as) > RETRIED_CACHE_SIZE:
            self._retried_as.popitem(last=False)
