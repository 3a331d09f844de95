"""Queue health: depths from the broker, consumers and rates, refreshed in the
background and served from the last snapshot (with its age)."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from flower_ops.core.errors import Unavailable
from flower_ops.core.times import iso_utc, seconds
from flower_ops.monitor.sources.flower_state import task_queue
from flower_ops.monitor.sources.queue_depths import BrokerSnapshot, QueueSource

logger = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 60.0
# Dequeues are counted per second and queue; seconds this far behind the
# newest are dropped
DEQUEUE_HORIZON_SECONDS = 2 * int(RATE_WINDOW_SECONDS)


class QueueService:
    def __init__(self, *, source: QueueSource | None, transport: str,
                 queue_names: Callable[[], Iterable[str]],
                 consumers: Callable[[], dict[str, int]],
                 revoked_waiting: Callable[[str], int] | None = None) -> None:
        self.source = source
        self.transport = transport
        self._queue_names = queue_names
        self._consumers = consumers
        # where revoked messages stay queued (RabbitMQ): how many, per queue
        self._revoked_waiting = revoked_waiting
        self._revoked_counts: dict[str, int] = {}
        self.snapshot: BrokerSnapshot | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        # queue -> {second: tasks that left it then}, from events (see note_dequeued);
        # a rate reads ~60 counters, not one entry per task
        self._dequeued: dict[str, dict[int, int]] = {}
        self._newest_second = 0
        self._depth_history: deque[tuple[float, dict[str, int]]] = deque(maxlen=120)
        self._refreshing = False
        # hear each applied snapshot's ready messages per queue (IOLoop thread)
        self.depth_listeners: list[Callable[[dict[str, int], float], None]] = []

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        """Index observer: a task a worker received has left its queue."""
        if task.state == "RECEIVED" and old_state in (None, "PENDING"):
            self.note_dequeued(task_queue(task), getattr(task, "received", 0.0) or 0.0)

    def refresh_in_background(self, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        """Timer callback (IOLoop thread): one broker read on the executor, its
        result applied back on the loop; skipped while the last one runs."""
        if self.source is None or self._refreshing:
            return
        self._refreshing = True
        future: Any = run_blocking(self.refresh)

        def done(fut: Any) -> None:
            self._refreshing = False
            if not fut.cancelled() and fut.exception() is None:
                self.apply(fut.result())

        future.add_done_callback(done)

    def totals(self) -> dict[str, Any]:
        """Ready and unacked messages over all queues, for ``/stats``."""
        snapshot = self.snapshot
        if snapshot is None:
            return {"messages": None, "unacked": None, "queues": 0}
        return {"messages": sum(q.messages for q in snapshot.queues.values()),
                "unacked": snapshot.unacked_total, "queues": len(snapshot.queues)}

    def note_dequeued(self, queue: str | None, at: float) -> None:
        if not queue:
            return
        second = int(at)
        counts = self._dequeued.get(queue)
        if counts is None:
            counts = self._dequeued[queue] = {}
        counts[second] = counts.get(second, 0) + 1
        if second > self._newest_second:
            self._newest_second = second
            horizon = second - DEQUEUE_HORIZON_SECONDS
            for per_queue in self._dequeued.values():
                for old in [s for s in per_queue if s < horizon]:
                    del per_queue[old]

    def refresh(self) -> BrokerSnapshot | None:
        """Blocking: one round trip to the broker. Runs on an executor thread."""
        if self.source is None:
            return None
        try:
            snapshot = self.source.fetch(self._queue_names())
        except Exception as exc:  # noqa: BLE001 - reported in the API, retried next tick
            self.last_error, self.last_error_at = f"{type(exc).__name__}: {exc}", time.time()
            logger.warning("queue refresh failed: %s", self.last_error)
            return None
        self.last_error = None
        return snapshot

    def apply(self, snapshot: BrokerSnapshot | None) -> None:
        """Store a refresh result (IOLoop thread)."""
        if snapshot is None:
            return
        self.snapshot = snapshot
        if self._revoked_waiting is not None:
            self._revoked_counts = {name: self._revoked_waiting(name)
                                    for name in snapshot.queues}
        depths = {n: q.messages for n, q in snapshot.queues.items()}
        self._depth_history.append((snapshot.taken_at, depths))
        for listener in self.depth_listeners:
            listener(depths, snapshot.taken_at)

    def growth(self, name: str, window: float, now: float) -> int | None:
        """Change in ready messages of ``name`` over about the last ``window`` seconds."""
        since = now - window
        history = [h for h in self._depth_history if h[0] >= since]
        if len(history) < 2:
            return None
        return history[-1][1].get(name, 0) - history[0][1].get(name, 0)

    def consumers_of(self, name: str) -> int | None:
        """Consumers of a queue: the broker's count where it reports one, else
        the workers' active queues (None before any worker answered inspect)."""
        snapshot = self.snapshot
        depth = snapshot.queues.get(name) if snapshot is not None else None
        if depth is not None and depth.consumers is not None:
            return depth.consumers
        return self._consumers().get(name, 0)

    def rates(self, name: str, now: float) -> tuple[float | None, float | None]:
        """(rate_in, rate_out) in messages/s over the last minute.

        Out is what workers took (task-received events); in is out plus the
        change in depth over the same window, so it holds without sent events.
        """
        since = now - RATE_WINDOW_SECONDS
        history = [h for h in self._depth_history if h[0] >= since]
        if len(history) < 2:
            return None, None
        (t0, first), (t1, last) = history[0], history[-1]
        span = max(t1 - t0, 1e-3)
        first_second, last_second = int(t0), int(t1)
        taken = sum(count for second, count in self._dequeued.get(name, {}).items()
                    if first_second <= second <= last_second)
        rate_out = taken / span
        growth = (last.get(name, 0) - first.get(name, 0)) / span
        return max(0.0, rate_out + growth), rate_out

    def list(self) -> dict[str, Any]:
        now = time.time()
        snapshot = self.snapshot
        if self.source is None:
            detail = "queue depths are read from Redis and RabbitMQ brokers"
            return {"queues": [], "broker": {"transport": self.transport, "supported": False,
                                             "detail": detail}}
        if snapshot is None:
            raise Unavailable("broker not reachable yet", {"error": self.last_error})
        consumers = self._consumers()
        queues = []
        for name, depth in sorted(snapshot.queues.items()):
            if depth.rate_in is not None or depth.rate_out is not None:
                rate_in, rate_out = depth.rate_in, depth.rate_out
            else:
                rate_in, rate_out = self.rates(name, now)
            queues.append({
                "name": name,
                "messages": depth.messages,
                "unacked": depth.unacked,
                "consumers": (depth.consumers if depth.consumers is not None
                              else consumers.get(name, 0)),
                "rate_in": rate_in,
                "rate_out": rate_out,
                "oldest_message_age_seconds": seconds(depth.oldest_message_age_seconds),
                "by_priority": depth.by_priority,
                # of the ready messages, those whose task is already revoked
                "revoked": self._revoked_counts.get(name, 0),
            })
        return {
            "queues": queues,
            "broker": {
                "transport": snapshot.transport, "supported": True, "source": snapshot.source,
                "detail": snapshot.detail,
                "unacked_total": snapshot.unacked_total,
                "refreshed_at": iso_utc(snapshot.taken_at),
                "age_seconds": seconds(now - snapshot.taken_at),
                "error": self.last_error,
            },
        }


class WatchedQueues:
    """Which queues ``/queues`` reads: the app's configured ones, the ones set
    in ``FLOWER_OPS_QUEUES``, those workers consume and those tasks went to."""

    def __init__(self, *, configured: Iterable[str | None],
                 consumed: Callable[[], Iterable[str]],
                 seen: Callable[[], Iterable[str]]) -> None:
        self._configured = frozenset(n for n in configured if n)
        self._consumed = consumed
        self._seen = seen

    def __call__(self) -> set[str]:
        names = set(self._configured)
        names.update(self._consumed())
        names.update(self._seen())
        return {n for n in names if n}
