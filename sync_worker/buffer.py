"""Transitions received and not yet committed: the hand-over between the
event consumers (``put``, ``put_many``) and the writer (``wait_for_batch``,
``take``, and ``requeue`` for a batch it could not commit). Thread-safe.

Transitions are kept in groups as they were put, each with its *ack tokens*
(the ids of the stream entries, or the AMQP deliveries, they came from;
none for pub/sub): ``take``
hands whole groups to the writer, which acknowledges their tokens only once
the batch is committed. Pub/sub groups beyond ``max_events`` are dropped
(``on_drop``); stream groups never are: the stream consumer waits for room
(``wait_for_room``) before it reads, and the stream keeps the rest.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from flower_ops.core.transitions import Transition

# Wake the writer when the buffer starts filling and every this many events,
# not on every event: a burst costs one notify per chunk
_NOTIFY_EVERY = 500

_Group = tuple[list[Transition], Sequence[Any]]


class EventBuffer:
    """At most ``max_events``; beyond, pub/sub events are dropped and
    ``on_drop`` is called (the worker then schedules reconciliation and discovery)."""

    def __init__(self, *, max_events: int, on_drop: Callable[[], None]) -> None:
        self._groups: deque[_Group] = deque()
        self._count = 0
        self._cond = threading.Condition()
        self._max = max_events
        self._on_drop = on_drop
        self._oldest_at = 0.0

    def __len__(self) -> int:
        return self._count

    def room(self) -> int:
        return self._max - self._count

    def put(self, transition: Transition) -> None:
        self.put_many([transition])

    def put_many(self, transitions: list[Transition], acks: Sequence[Any] = ()) -> None:
        """Add a group; with ``acks`` (stream ids) it is never dropped."""
        with self._cond:
            if not acks:
                room = self._max - self._count
                if room < len(transitions):
                    # Dropping is what Redis would do to a slow subscriber anyway;
                    # the caller schedules a reconciliation to close the gap.
                    self._on_drop()
                    transitions = transitions[:max(0, room)]
                    if not transitions:
                        return
            before = self._count
            if not before:
                self._oldest_at = time.monotonic()
            self._groups.append((transitions, acks))
            self._count = before + len(transitions)
            if before == 0 or before // _NOTIFY_EVERY != self._count // _NOTIFY_EVERY:
                self._cond.notify_all()

    def wait_for_room(self, needed: int, stop: threading.Event, timeout: float = 0.5) -> bool:
        """Whether ``needed`` events fit, waiting up to ``timeout`` for the writer."""
        with self._cond:
            if self._max - self._count >= needed:
                return True
            if not stop.is_set():
                self._cond.wait(timeout)
            return self._max - self._count >= needed

    def wait_for_batch(self, *, batch_size: int, flush_interval_seconds: float,
                       stop: threading.Event) -> None:
        """Return once ``batch_size`` events wait, or the oldest has waited
        ``flush_interval_seconds``, or ``stop`` is set (``wake`` to notice)."""
        with self._cond:
            while not stop.is_set():
                if self._count >= batch_size:
                    return
                if self._count:
                    remaining = self._oldest_at + flush_interval_seconds - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
                else:
                    self._cond.wait(0.5)

    def take(self, max_items: int) -> tuple[list[Transition], list[Any]]:
        """The oldest whole groups (about ``max_items`` events, at least one
        group) and their ack tokens, removed."""
        batch: list[Transition] = []
        acks: list[Any] = []
        with self._cond:
            groups = self._groups
            while groups and (not batch or len(batch) + len(groups[0][0]) <= max_items):
                transitions, tokens = groups.popleft()
                batch.extend(transitions)
                acks.extend(tokens)
            self._count -= len(batch)
            if groups:
                self._oldest_at = time.monotonic()
            self._cond.notify_all()          # room for a waiting stream consumer
        return batch, acks

    def requeue(self, batch: list[Transition], acks: Sequence[Any] = ()) -> None:
        """Put a batch that was taken but not committed back in front (kept
        whatever ``max_events`` says: these were accepted already)."""
        with self._cond:
            if not self._count:
                self._oldest_at = time.monotonic()
            self._groups.appendleft((batch, list(acks)))
            self._count += len(batch)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
