"""What operator actions read from and record in Flower's memory.

IOLoop thread only (Flower's threading rule). A cancel that is certain — the
task's message was taken out of its queue, or a queued task was revoked — is
recorded in Flower's own task object at once, as the worker's
``task-revoked`` event would (``Task.event``, so Celery's state precedence
applies: a later real SUCCESS still wins), and the index is told, so every
view (listings, ``/stats``, the feed, Flower's own pages) shows REVOKED from
the answer on. No worker is invented: the event is applied to the task, not
through ``EventsState.event``.
"""
from __future__ import annotations

from collections.abc import Iterable

from flower_ops.core.query import TaskQuery
from flower_ops.monitor.sources.task_index import TaskIndex

# how many revoked tasks of one queue are looked at per count
MAX_COUNTED = 10_000


class FlowerTasks:
    def __init__(self, index: TaskIndex) -> None:
        self._index = index

    def states(self, ids: Iterable[str]) -> dict[str, str]:
        """The state Flower's memory holds for each of ``ids`` it knows."""
        return {task_id: task.state for task_id, task in self._index.lookup(ids).items()}

    def record_revoked(self, ids: Iterable[str], at: float) -> None:
        tasks = self._index.lookup(ids)
        for task_id, task in tasks.items():
            task.event("revoked", at, at, {})
            self._index.listener.dirty.add(task_id)
        if tasks:
            self._index.sync()

    def revoked_waiting(self, queue: str) -> int:
        """Tasks of ``queue`` revoked before any worker received them: on a
        broker whose queues we cannot edit (RabbitMQ) their messages are still
        among the queue's ready ones, until a worker takes and discards them."""
        ids, _total, _next = self._index.query(
            TaskQuery(states=frozenset({"REVOKED"}), queue=queue, limit=MAX_COUNTED))
        # A worker that takes a revoked message discards it before any
        # task-received, but its task-revoked names the worker: no worker yet
        # means the message still waits.
        return sum(1 for task in self._index.lookup(ids).values()
                   if getattr(task, "worker", None) is None
                   and not getattr(task, "received", None))
