"""Sending one message to many feed clients without holding the IOLoop.

A ``view`` or ``numbers`` message goes to every client of a window: a
thousand socket writes, ~50 ms of the IOLoop in one piece. ``FanOut`` sends
in slices of at most ``SLICE_SECONDS`` and lets the IOLoop run whatever is
ready in between (requests, events), so nothing waits behind a fan-out for
longer than a slice. Messages go out in the order they were queued.

A client that was sent a newer message directly in the meantime (a snapshot
after it subscribed) skips the older one: a message whose ``seq`` is not
above the last it was sent is not written to it, and a window's snapshot
already holds every change of the ``view`` messages before it.

IOLoop thread only.
"""
from __future__ import annotations

import time
from collections import deque

from tornado.ioloop import IOLoop

from flower_ops.monitor.live.subscriber import Subscriber

SLICE_SECONDS = 0.005
CHECK_EVERY = 16  # writes between two looks at the clock


class FanOut:
    def __init__(self, io_loop: IOLoop, *, slice_seconds: float = SLICE_SECONDS) -> None:
        self.io_loop = io_loop
        self.slice_seconds = slice_seconds
        self._queue: deque[tuple[bytes, int, list[Subscriber]]] = deque()
        self._position = 0
        self._scheduled = False
        self.stats = {"messages": 0, "writes": 0, "slices": 0}

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, message: bytes, seq: int, subscribers: list[Subscriber]) -> None:
        """Queue ``message`` for ``subscribers`` (sent from the next IOLoop turn)."""
        if not subscribers:
            return
        self._queue.append((message, seq, subscribers))
        self.stats["messages"] += 1
        self._schedule()

    def clear(self) -> None:
        self._queue.clear()
        self._position = 0

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.io_loop.add_callback(self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        self.stats["slices"] += 1
        deadline = time.perf_counter() + self.slice_seconds
        queue = self._queue
        while queue:
            message, seq, subscribers = queue[0]
            index = self._position
            count = len(subscribers)
            while index < count:
                sub = subscribers[index]
                # superseded for a client sent a newer message (a snapshot) meanwhile
                if sub.last_seq is None or seq > sub.last_seq:
                    sub.send(message, seq)
                index += 1
                if index % CHECK_EVERY == 0 and time.perf_counter() > deadline and index < count:
                    self.stats["writes"] += index - self._position
                    self._position = index
                    self._schedule()
                    return
            self.stats["writes"] += count - self._position
            queue.popleft()
            self._position = 0
