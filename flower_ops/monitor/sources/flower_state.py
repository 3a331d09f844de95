"""Adapter over Flower's event state: which tasks each event touched.

``attach`` switches the running state object to ``IndexedEventsState``, so
every path that feeds the state (Flower's receiver thread, a loaded
persistent state, tests calling ``state.event``) marks the task dirty for
each ``ChangeListener`` (the ``TaskIndex``, ``task_index.py``). The helpers
read a Flower ``Task`` the way the rest of the monitor needs.
"""
from __future__ import annotations

from typing import Any

from celery.events.state import Task as CeleryTask
from celery.events.state import _depickle_task
from flower.events import EventsState

from flower_ops.core.payload import (
    EXACT_ARGS_FIELD,
    EXACT_KWARGS_FIELD,
    arguments,
    is_exact_text,
    stock_event,
)
from flower_ops.core.times import local_utcoffset_hours, sender_timestamp

HEAP_TRIM_FRACTION = 64


class ChangeListener:
    """Receives the ids of tasks touched by events (and evicted ones)."""

    def __init__(self) -> None:
        self.dirty: set[str] = set()


class AcyclicTask(CeleryTask):
    """Celery's ``Task`` without its reference cycle.

    Celery's ``Task`` keeps a dict of its own bound methods
    (``_serializer_handlers``), so every task is a reference cycle: one that
    Flower's LRU drops is freed only by a full garbage collection. At 100,000
    tasks with 300 evicted a second that meant a 1.5 s collection every
    ~13 s, the IOLoop stopped for all of it (measured by ``./dev suite
    load``). Built on each use instead, they leave nothing to collect:
    a dropped task is freed at once.
    """

    __slots__ = ()

    @property
    def _serializer_handlers(self) -> dict[str, Any]:
        return {"children": self._serializable_children, "root": self._serializable_root,
                "parent": self._serializable_parent}

    @_serializer_handlers.setter
    def _serializer_handlers(self, value: Any) -> None:
        pass  # Celery's __init__ assigns the cycle; not kept

    def __reduce__(self) -> Any:
        # Persist as Celery's own class: a saved state must load without us.
        return _depickle_task, (CeleryTask, self.as_dict())


class IndexedEventsState(EventsState):
    """Flower's ``EventsState`` that also records which tasks each event touched.

    ``install()`` switches the running state object to this class, so every
    path that feeds the state (Flower's receiver thread, a loaded persistent
    state, tests calling ``state.event``) is seen.
    """

    _flower_ops_listeners: list[ChangeListener]
    Task = AcyclicTask

    def event(self, event: dict[str, Any]) -> Any:
        offset = event.get("utcoffset")
        if offset is not None and offset != local_utcoffset_hours() \
                and "local_received" in event:
            event = epoch_timestamp(event)      # the receiver shifted it: undo
        uuid = event.get("uuid")
        if uuid is None:
            return super().event(event)
        if is_exact_text(event.get("args")) or is_exact_text(event.get("kwargs")):
            event = stock_event(event)
        heap = self._taskheap
        if len(heap) >= self.max_tasks_in_memory * self.heap_multiplier:
            # Celery's State keeps a time-ordered list of task events and, once
            # full, drops its oldest entry with list.pop(0) on every event: a
            # memmove of the whole list (~100 us at 100,000 tasks). Dropping
            # the oldest 1/64 at once costs the same, once per that many events.
            # Nothing in Flower or here reads that list (tasks_by_time).
            del heap[:max(1, len(heap) // HEAP_TRIM_FRACTION)]
        tasks = self.tasks
        evicted = None
        limit = tasks.limit
        if limit and len(tasks) >= limit and uuid not in tasks.data:
            # The LRU cache drops its oldest entry to make room for this one
            evicted = next(iter(tasks.data), None)
        result = super().event(event)
        for listener in self._flower_ops_listeners:
            listener.dirty.add(uuid)
            if evicted is not None:
                listener.dirty.add(evicted)
        return result

    def __reduce__(self) -> Any:
        # Persist as Flower's own class: a saved state must load without us.
        reduced = super().__reduce__()
        return (EventsState, *reduced[1:])


def epoch_timestamp(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with the ``timestamp`` its sender stamped (epoch seconds),
    undoing the shift Flower's ``EventReceiver`` applied (``times.sender_timestamp``)."""
    timestamp = sender_timestamp(event, local_utcoffset_hours())
    if timestamp is None or timestamp == event.get("timestamp"):
        return event
    return {**event, "timestamp": timestamp}


def attach(state: EventsState) -> IndexedEventsState:
    if not isinstance(state, IndexedEventsState):
        state.__class__ = IndexedEventsState
    indexed: IndexedEventsState = state
    if not hasattr(indexed, "_flower_ops_listeners"):
        indexed._flower_ops_listeners = []
    return indexed


def task_worker(task: Any) -> str | None:
    worker = getattr(task, "worker", None)
    return getattr(worker, "hostname", None) if worker is not None else None


def task_queue(task: Any) -> str | None:
    # task-sent names the queue; without sent events the routing key is the
    # queue name for Celery's default direct exchanges.
    return getattr(task, "queue", None) or getattr(task, "routing_key", None) or None


def task_first_timestamp(task: Any) -> float:
    for name in ("sent", "received", "started", "timestamp"):
        value = getattr(task, name, None)
        if value:
            return float(value)
    return 0.0


def task_arguments(task: Any) -> tuple[Any, Any, bool]:
    """(args, kwargs, exact) of a Flower task: the exact values ``task-sent``
    brought when there are any, else what its reprs say."""
    return arguments(getattr(task, EXACT_ARGS_FIELD, None), getattr(task, EXACT_KWARGS_FIELD, None),
                     getattr(task, "args", None), getattr(task, "kwargs", None))


def task_has_exact_arguments(task: Any) -> bool:
    return getattr(task, EXACT_ARGS_FIELD, None) is not None
