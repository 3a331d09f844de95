"""The live feed: change capture, coalescing, seq, replay buffer, fan-out.

No HTTP here: ``http/ws.py`` adapts a WebSocket to a ``Subscriber``;
``filters.py``, ``subscriber.py``, ``snapshots.py`` and ``protocol.py`` are its parts.

* Changes come from ``TaskIndex`` (its ``change_listeners``), on the IOLoop
  thread. They are only collected (a set add); a flush coalesces them at most
  every ``ws_flush_seconds``, so a task that went RECEIVED -> STARTED ->
  SUCCESS within one window costs one update.
* Every message is serialized once per distinct filter set and the same
  string goes to every subscriber of that set.
* Every message gets the next ``seq`` (strictly increasing for each client;
  gaps are normal). Deltas are kept in a bounded replay buffer, so a client
  that reconnects with its last seq gets exactly what it missed, else a fresh
  snapshot. The first seq is the start time in milliseconds, so a client of a
  restarted monitor never sees seq go backwards.
* Each subscriber has a bounded queue (messages written but not yet flushed
  to its socket). A subscriber over its bound is dropped, never waited for.
* Window subscribers (``views.py``) get their window instead of every
  change: a ``view`` message per window every ``VIEW_SECONDS``, and the
  snapshot's shared parts (a ``numbers`` message) every ``ws_snapshot_seconds``.
* Alert changes go out with the next flush, coalesced per alert. A burst
  (a worker lost with thousands of running tasks, stuck tasks found at
  start-up or resolved as they are evicted) is not fanned out message by
  message to every client: when alerts x clients in one flush exceed
  ``ALERT_WRITES_PER_FLUSH``, the next snapshot, at most
  ``ws_snapshot_seconds`` away, carries the active alerts instead.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from flower_ops.core.times import now_iso
from flower_ops.monitor.live.deltas import Delta as _Delta
from flower_ops.monitor.live.fanout import FanOut
from flower_ops.monitor.live.filters import Filters, wants
from flower_ops.monitor.live.protocol import CLOSE_GOING_AWAY, encode
from flower_ops.monitor.live.snapshots import Snapshots
from flower_ops.monitor.live.subscriber import Subscriber
from flower_ops.monitor.live.views import VIEW_SECONDS, ViewKey, Views
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.sources.task_index import TaskIndex

logger = logging.getLogger(__name__)

MAX_FLUSH_SECONDS = 0.5
FLUSH_LOAD_FACTOR = 2.5
# One write per alert per client: 2,000 writes are ~20 ms of the IOLoop
ALERT_WRITES_PER_FLUSH = 2000


@dataclass(frozen=True)
class FeedSettings:
    """The feed's ``FLOWER_OPS_WS_*`` settings."""

    flush_seconds: float
    snapshot_seconds: float
    replay_buffer_size: int
    client_queue_size: int
    client_buffer_bytes: int


class LiveFeed:
    """Fans task changes and periodic snapshots out to subscribers."""

    def __init__(self, *, settings: FeedSettings, index: TaskIndex, tasks: TaskQueryService,
                 snapshots: Snapshots, io_loop: IOLoop) -> None:
        self.index = index
        self.tasks = tasks
        self.snapshots = snapshots
        self.io_loop = io_loop
        self.flush_seconds = settings.flush_seconds
        self.snapshot_seconds = settings.snapshot_seconds
        self.replay_capacity = settings.replay_buffer_size
        self.client_queue_size = settings.client_queue_size
        self.client_buffer_bytes = settings.client_buffer_bytes
        self.subscribers: set[Subscriber] = set()
        self._seq = int(time.time() * 1000)
        self._floor = self._seq
        self._pending: set[str] = set()
        self._prev_states: dict[str, str | None] = {}
        # alert id -> its latest (event, alert) since the last flush
        self._pending_alerts: dict[str, tuple[str, dict[str, Any]]] = {}
        self._flush_handle: object | None = None
        self._last_flush = 0.0
        self._flush_interval = self.flush_seconds
        self._buffer: deque[_Delta] = deque()
        self._buffered_tasks = 0
        self._timer: PeriodicCallback | None = None
        self._view_timer: PeriodicCallback | None = None
        self.fanout = FanOut(io_loop)
        self.views = Views(snapshots=snapshots, tasks=tasks, next_seq=self.next_seq,
                           fanout=self.fanout)
        self.stats = {"flushes": 0, "task_updates": 0, "snapshots": 0, "dropped": 0,
                      "messages": 0, "alerts_sent": 0, "alerts_deferred": 0}

    # -- lifecycle (IOLoop thread) -------------------------------------------------

    def start(self) -> None:
        self._timer = PeriodicCallback(self.broadcast_snapshot, self.snapshot_seconds * 1000)
        self._timer.start()
        self._view_timer = PeriodicCallback(self.tick_views, VIEW_SECONDS * 1000)
        self._view_timer.start()

    def stop(self) -> None:
        for timer in (self._timer, self._view_timer):
            if timer is not None:
                timer.stop()
        self._timer = self._view_timer = None
        self.fanout.clear()
        if self._flush_handle is not None:
            self.io_loop.remove_timeout(self._flush_handle)
            self._flush_handle = None
        for subscriber in list(self.subscribers):
            subscriber.closed = True
            try:
                subscriber._close(CLOSE_GOING_AWAY, "monitor stopping")
            except Exception:
                logger.debug("closing a feed client failed", exc_info=True)
        self.subscribers.clear()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def seq(self) -> int:
        return self._seq

    def subscriber(self, *, write: Callable[[bytes], Any],
                   close: Callable[[int, str], None]) -> Subscriber:
        sub = Subscriber(write=write, close=close, max_messages=self.client_queue_size,
                         max_bytes=self.client_buffer_bytes)
        sub.on_drop = self._dropped
        return sub

    def _dropped(self, sub: Subscriber) -> None:
        self.stats["dropped"] += 1
        self.subscribers.discard(sub)
        self.views.leave(sub)
        logger.info("dropped a slow live feed client (%d messages, %d bytes queued)",
                    sub.pending_messages, sub.pending_bytes)

    def attach(self, sub: Subscriber, *, resume_seq: int | None = None,
               window: ViewKey | None = None) -> None:
        """Start feeding ``sub``: what it missed since ``resume_seq``, else a
        snapshot. A window subscriber always starts from a snapshot of its window
        (small, and its ``view`` messages are not kept for replay)."""
        self.subscribers.add(sub)
        if window is not None:
            self.views.join(sub, window)
        elif resume_seq is not None and self.replay(sub, resume_seq):
            return
        self.send_snapshot(sub, resync=resume_seq is not None)

    def detach(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.views.leave(sub)

    def subscribe(self, sub: Subscriber, filters: Filters, limit: int,
                  window: ViewKey | None = None) -> None:
        sub.filters = filters
        sub.limit = limit
        self.views.join(sub, window)  # None: every change, no window
        self.send_snapshot(sub)

    def _everything(self) -> list[Subscriber]:
        """The subscribers of mode ``all``: every change, not a window."""
        return [sub for sub in self.subscribers if sub.view is None]

    def tick_views(self) -> None:
        if self.views.windows:
            try:
                self.stats["messages"] += self.views.tick()
            except Exception:
                logger.exception("live feed window update failed")

    def on_alert(self, event: str, alert: dict[str, Any]) -> None:
        """An alert was raised, updated or resolved (an ``AlertBus`` subscriber).

        Only noted here; the next flush sends it (see the module docstring).
        """
        if not self.subscribers:
            self.snapshots.forget_parts()
            return
        key = str(alert.get("id") or f"{alert.get('kind')}:{alert.get('subject')}")
        # The latest event of an alert wins, at its latest position
        self._pending_alerts.pop(key, None)
        self._pending_alerts[key] = (event, alert)
        self._schedule_flush()

    def _flush_alerts(self) -> None:
        alerts, self._pending_alerts = self._pending_alerts, {}
        if not alerts:
            return
        # Snapshot pieces built before these changes are stale now
        self.snapshots.forget_parts()
        # Window subscribers get the alerts with their numbers messages
        everything = self._everything()
        if len(alerts) * len(everything) > ALERT_WRITES_PER_FLUSH:
            self.stats["alerts_deferred"] += len(alerts)
            return
        for event, alert in alerts.values():
            seq = self.next_seq()
            message = encode({"type": "alert", "seq": seq, "time": now_iso(),
                              "event": event, "alert": alert}).encode()
            for sub in everything:
                sub.send(message, seq)
            self.stats["alerts_sent"] += 1

    def send(self, sub: Subscriber, message: dict[str, Any]) -> None:
        """A control message to one subscriber (error, pong, resumed)."""
        seq = self.next_seq()
        sub.send(encode({**message, "seq": seq}).encode(), seq)

    # -- change capture and coalescing ---------------------------------------------

    def on_changes(self, changed: set[str]) -> None:
        self._pending.update(changed)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            now = self.io_loop.time()
            delay = max(0.01, self._last_flush + self._flush_interval - now)
            self._flush_handle = self.io_loop.call_later(delay, self.flush)

    def on_transition(self, uuid: str, old_state: str | None, task: Any) -> None:
        # The state a task had at the last flush, so a client filtering by
        # state learns that a task left its filter.
        if uuid not in self._prev_states:
            self._prev_states[uuid] = old_state

    def flush(self) -> None:
        self._flush_handle = None
        self._last_flush = self.io_loop.time()
        pending, self._pending = self._pending, set()
        prev_states, self._prev_states = self._prev_states, {}
        self._flush_alerts()
        if not pending:
            return
        data = self.index.state.tasks.data
        ids = [uuid for uuid in pending if uuid in data]
        removed = [uuid for uuid in pending if uuid not in data]
        self.snapshots.forget_tasks()
        delta = _Delta(seq=self.next_seq(), time=now_iso(), ids=ids, removed=removed,
                       prev_states={u: prev_states[u] for u in ids if u in prev_states})
        self._remember(delta)
        self.stats["flushes"] += 1
        for sub in self._everything():  # windows get theirs from tick_views
            message = self._delta_message(delta, sub.filters)
            if message is not None and sub.send(message, delta.seq):
                self.stats["messages"] += 1
        # Only the ids stay in the replay buffer
        delta.forget()
        # Under load (many clients, many changes) flush less often: fewer,
        # larger, more coalesced messages keep the IOLoop responsive.
        spent = self.io_loop.time() - self._last_flush
        self._flush_interval = min(MAX_FLUSH_SECONDS,
                                   max(self.flush_seconds, FLUSH_LOAD_FACTOR * spent))

    def _delta_message(self, delta: _Delta, filters: Filters) -> bytes | None:
        cached = delta.encoded.get(filters)
        if cached is not None:
            return cached or None
        all_tasks = delta.tasks_now(self.index.state.tasks.data, self.tasks.summaries)
        tasks = all_tasks if filters.empty else [t for t in all_tasks
                                                 if wants(filters, t, delta.prev_states)]
        removed = delta.removed + delta.gone
        if not tasks and not removed:
            delta.encoded[filters] = b""
            return None
        message = encode({"type": "tasks", "seq": delta.seq, "time": delta.time,
                          "tasks": tasks, "removed": removed}).encode()
        delta.encoded[filters] = message
        return message

    def _remember(self, delta: _Delta) -> None:
        if self.replay_capacity <= 0:
            self._floor = delta.seq
            return
        self._buffer.append(delta)
        self._buffered_tasks += len(delta.ids) + len(delta.removed)
        while self._buffered_tasks > self.replay_capacity and self._buffer:
            old = self._buffer.popleft()
            self._buffered_tasks -= len(old.ids) + len(old.removed)
            self._floor = old.seq

    def replay(self, sub: Subscriber, since_seq: int) -> bool:
        """Send the deltas after ``since_seq``; False when they are no longer all
        held, or ``sub`` shows a window (its resume is a snapshot)."""
        if sub.view is not None:
            return False
        if since_seq < self._floor or since_seq > self._seq:
            return False
        replayed = 0
        for delta in self._buffer:
            if delta.seq <= since_seq:
                continue
            message = self._delta_message(delta, sub.filters)
            delta.forget()
            if message is not None:
                if not sub.send(message, delta.seq):
                    return True
                replayed += 1
        self.send(sub, {"type": "resumed", "from_seq": since_seq, "replayed": replayed,
                        "instance": self.snapshots.instance})
        return True

    # -- snapshots ------------------------------------------------------------------

    def send_snapshot(self, sub: Subscriber, *, resync: bool = False) -> None:
        parts_json = self.snapshots.parts_json(fresh=False)
        window = self.views.windows.get(sub.view) if sub.view is not None else None
        if window is not None:
            tasks_json = window.snapshot_tasks_json()
        else:
            tasks_json = self.snapshots.tasks_json(sub.filters, sub.limit)
        # The seq is taken once the pieces are built: building them syncs the
        # index and evaluates alerts, which may send alert messages first, and
        # those must not carry a higher seq than this snapshot.
        seq = self.next_seq()
        sub.send(self.snapshots.message(seq, parts_json, tasks_json, sub.filters, resync,
                                        window=sub.view), seq)

    def broadcast_snapshot(self) -> None:
        if not self.subscribers:
            return
        try:
            self._broadcast_snapshot()
        except Exception:
            logger.exception("live feed snapshot failed")

    def _broadcast_snapshot(self) -> None:
        parts_json = self.snapshots.parts_json(fresh=True)
        everything = self._everything()
        tasks_json = {key: self.snapshots.tasks_json(*key)
                      for key in {(sub.filters, sub.limit) for sub in everything}}
        seq = self.next_seq()  # after building, as in send_snapshot
        self.stats["snapshots"] += 1
        windowed = self.views.subscribers()
        if windowed:
            # Window clients have their rows; they get the fresh numbers
            self.fanout.send(self.snapshots.numbers(seq), seq, windowed)
        messages: dict[tuple[Filters, int], bytes] = {}
        for sub in everything:
            key = (sub.filters, sub.limit)
            message = messages.get(key)
            if message is None:
                # Building only ever drops subscribers (a slow one), never adds
                message = messages[key] = self.snapshots.message(seq, parts_json,
                                                                 tasks_json[key], key[0])
            sub.send(message, seq)
