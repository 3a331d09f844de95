"""Transitions received and not yet committed: the hand-over between the
event consumer (``put``, ``put_many``) and the writer (``wait_for_batch``,
``take``, and ``requeue`` for a batch it could not commit). Thread-safe."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flower_ops.core.transitions import Transition

# Wake the writer when the buffer starts filling and every this many events,
# not on every event: a burst costs one notify per chunk
_NOTIFY_EVERY = 500


class EventBuffer:
    """At most ``max_events``; beyond, events are dropped and ``on_drop`` is
    called (the worker then schedules reconciliation and discovery)."""

    def __init__(self, *, max_events: int, on_drop: Callable[[], None]) -> None:
        self._items: list[Transition] = []
        self._cond = threading.Condition()
        self._max = max_events
        self._on_drop = on_drop
        self._oldest_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, transition: Transition) -> None:
        with self._cond:
            if len(self._items) >= self._max:
                # Dropping is what Redis would do to a slow subscriber anyway;
                # the caller schedules a reconciliation to close the gap.
                self._on_drop()
                return
            if not self._items:
                self._oldest_at = time.monotonic()
            self._items.append(transition)
            if len(self._items) == 1 or len(self._items) % _NOTIFY_EVERY == 0:
                self._cond.notify()

    def put_many(self, transitions: list[Transition]) -> None:
        with self._cond:
            room = self._max - len(self._items)
            if room < len(transitions):
                # Dropping is what Redis would do to a slow subscriber anyway;
                # the caller schedules a reconciliation to close the gap.
                self._on_drop()
                transitions = transitions[:max(0, room)]
                if not transitions:
                    return
            before = len(self._items)
            if not before:
                self._oldest_at = time.monotonic()
            self._items.extend(transitions)
            if before == 0 or before // _NOTIFY_EVERY != len(self._items) // _NOTIFY_EVERY:
                self._cond.notify()

    def wait_for_batch(self, *, batch_size: int, flush_interval_seconds: float,
                       stop: threading.Event) -> None:
        """Return once ``batch_size`` events wait, or the oldest has waited
        ``flush_interval_seconds``, or ``stop`` is set (``wake`` to notice)."""
        with self._cond:
            while not stop.is_set():
                if len(self._items) >= batch_size:
                    return
                if self._items:
                    remaining = self._oldest_at + flush_interval_seconds - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
                else:
                    self._cond.wait(0.5)

    def take(self, max_items: int) -> list[Transition]:
        """The oldest ``max_items`` events, removed."""
        with self._cond:
            batch, self._items = self._items[:max_items], self._items[max_items:]
            if self._items:
                self._oldest_at = time.monotonic()
            return batch

    def requeue(self, batch: list[Transition]) -> None:
        """Put a batch that was taken but not committed back in front, in its
        order (kept whatever ``max_events`` says: these were accepted already)."""
        with self._cond:
            self._items[:0] = batch

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
