"""The live feed: change capture, coalescing, seq, replay buffer, fan-out.

No HTTP here: ``handlers/ws.py`` adapts a WebSocket to a ``Subscriber``.

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
* Alert changes go out with the next flush, coalesced per alert. A burst
  (a worker lost with thousands of running tasks, stuck tasks found at
  start-up or resolved as they are evicted) is not fanned out message by
  message to every client: when alerts x clients in one flush exceed
  ``ALERT_WRITES_PER_FLUSH``, the next snapshot, at most
  ``ws_snapshot_seconds`` away, carries the active alerts instead.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop, PeriodicCallback

from flower_ops.core.errors import InvalidQuery, Unavailable
from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.query import TaskQuery

if TYPE_CHECKING:
    from flower_ops.monitor.app import FlowerOps

logger = logging.getLogger(__name__)

SNAPSHOT_TASKS = 50
PARTS_MAX_AGE_SECONDS = 0.5
MAX_FLUSH_SECONDS = 0.5
FLUSH_LOAD_FACTOR = 2.5
MAX_SNAPSHOT_TASKS = 500
MAX_FILTER_VALUES = 50
MAX_FILTER_TEXT = 256
# One write per alert per client: 2,000 writes are ~20 ms of the IOLoop
ALERT_WRITES_PER_FLUSH = 2000

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_TOO_SLOW = 4008


def encode(value: Any) -> str:
    # Task data may hold anything (NaN, objects); never fail a message over it.
    try:
        return json.dumps(value, default=str, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(value), default=str, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- filters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What a subscriber wants: any of ``states``, any of ``names``, any of ``queues``."""

    states: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.states or self.names or self.queues)

    def matches(self, task: dict[str, Any]) -> bool:
        return ((not self.states or task.get("state") in self.states)
                and (not self.names or task.get("name") in self.names)
                and (not self.queues or task.get("queue") in self.queues))

    def as_json(self) -> dict[str, list[str]]:
        return {"state": sorted(self.states), "name": sorted(self.names),
                "queue": sorted(self.queues)}

    def queries(self, limit: int) -> list[TaskQuery]:
        """Index queries whose union is this filter (the index takes one name/queue)."""
        names: Iterable[str | None] = sorted(self.names) or [None]
        queues = sorted(self.queues) or [None]
        return [TaskQuery(states=self.states, name=n, queue=q, limit=limit)
                for n in names for q in queues]


ALL = Filters()


def parse_filters(raw: Any) -> Filters:
    """``{"state": [...], "name": [...], "queue": [...]}``; strings or lists."""
    if raw is None:
        return ALL
    if not isinstance(raw, dict):
        raise InvalidQuery("filters must be an object")
    aliases = {"state": "states", "states": "states", "name": "names", "names": "names",
               "queue": "queues", "queues": "queues"}
    unknown = sorted(set(raw) - set(aliases))
    if unknown:
        raise InvalidQuery("unknown filter", {"unknown": unknown, "allowed": ["state", "name",
                                                                           "queue"]})
    values: dict[str, frozenset[str]] = {}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise InvalidQuery(f"filter {key} must be a string or a list of strings")
        items = [v.strip() for v in items if v.strip()]
        if len(items) > MAX_FILTER_VALUES or any(len(v) > MAX_FILTER_TEXT for v in items):
            raise InvalidQuery(f"filter {key} is too long")
        target = aliases[key]
        values[target] = values.get(target, frozenset()) | frozenset(items)
    states = frozenset(s.upper() for s in values.get("states", frozenset()))
    bad = sorted(states - set(TASK_STATES))
    if bad:
        raise InvalidQuery("unknown state", {"unknown": bad, "allowed": list(TASK_STATES)})
    names = values.get("names", frozenset())
    queues = values.get("queues", frozenset())
    if len(names) * max(1, len(queues)) > MAX_FILTER_VALUES:
        raise InvalidQuery("too many name and queue combinations")
    return Filters(states=states, names=names, queues=queues)


def parse_limit(raw: Any) -> int:
    if raw is None:
        return SNAPSHOT_TASKS
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_SNAPSHOT_TASKS:
        raise InvalidQuery(f"limit must be an integer between 1 and {MAX_SNAPSHOT_TASKS}")
    return raw


# -- subscribers ----------------------------------------------------------------------


class Subscriber:
    """One client of the feed, with a bounded queue of unflushed messages.

    ``write`` hands a message to the transport and returns an awaitable that
    completes when it left our buffers (Tornado's ``write_message``);
    ``close`` closes the transport with a code and reason.
    """

    def __init__(self, *, write: Callable[[bytes], Awaitable[None] | None],
                 close: Callable[[int, str], None], max_messages: int,
                 max_bytes: int) -> None:
        self._write = write
        self._close = close
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.filters: Filters = ALL
        self.limit = SNAPSHOT_TASKS
        self.pending_messages = 0
        self.pending_bytes = 0
        self.last_seq: int | None = None
        self.closed = False
        self.dropped = False
        self.on_drop: Callable[[Subscriber], None] | None = None

    def send(self, message: bytes, seq: int) -> bool:
        """Queue one message; drops the subscriber instead of queueing past its bound."""
        if self.closed:
            return False
        size = len(message)
        # Bounded by what is still unflushed; one large message on its way to a
        # reader that keeps up is not a reason to drop it.
        if self.pending_messages >= self.max_messages or self.pending_bytes > self.max_bytes:
            self.drop()
            return False
        try:
            result = self._write(message)
        except Exception:  # noqa: BLE001 - a closed transport; the handler detaches it
            self.closed = True
            return False
        self.last_seq = seq
        if result is None:
            return True
        self.pending_messages += 1
        self.pending_bytes += size
        add_done = getattr(result, "add_done_callback", None)
        if add_done is None:  # pragma: no cover - every Tornado write returns a future
            self.pending_messages -= 1
            self.pending_bytes -= size
            return True
        add_done(lambda fut: self._written(fut, size))
        return True

    def _written(self, future: Any, size: int) -> None:
        self.pending_messages -= 1
        self.pending_bytes -= size
        if not future.cancelled() and future.exception() is not None:
            self.closed = True

    def drop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.dropped = True
        if self.on_drop is not None:
            self.on_drop(self)
        try:
            self._close(CLOSE_TOO_SLOW, "client too slow, reconnect")
        except Exception:
            logger.debug("closing a slow feed client failed", exc_info=True)


# -- the feed ---------------------------------------------------------------------------


@dataclass
class _Delta:
    seq: int
    time: float
    tasks: list[dict[str, Any]]
    removed: list[str]
    prev_states: dict[str, str | None]
    encoded: dict[Filters, bytes] = field(default_factory=dict)


class LiveFeed:
    """Fans task changes and periodic snapshots out to subscribers."""

    def __init__(self, ops: FlowerOps, *, io_loop: IOLoop | None = None) -> None:
        config = ops.config
        self.ops = ops
        self.io_loop = io_loop or ops.io_loop
        self.flush_seconds = config.ws_flush_seconds
        self.snapshot_seconds = config.ws_snapshot_seconds
        self.replay_capacity = config.ws_replay_buffer_size
        self.client_queue_size = config.ws_client_queue_size
        self.client_buffer_bytes = config.ws_client_buffer_bytes
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
        # Snapshot pieces shared by clients that connect close together: the
        # shared parts for PARTS_MAX_AGE_SECONDS, the task lists until the next flush.
        self._parts_cache: tuple[float, str] | None = None
        self._tasks_cache: dict[tuple[Filters, int], str] = {}
        self.stats = {"flushes": 0, "task_updates": 0, "snapshots": 0, "dropped": 0,
                      "messages": 0, "alerts_sent": 0, "alerts_deferred": 0}

    # -- lifecycle (IOLoop thread) -------------------------------------------------

    def start(self) -> None:
        self.ops.index.change_listeners.append(self.on_changes)
        self.ops.index.observers.append(self._on_transition)
        self._timer = PeriodicCallback(self.broadcast_snapshot, self.snapshot_seconds * 1000)
        self._timer.start()

    def stop(self) -> None:
        if self.on_changes in self.ops.index.change_listeners:
            self.ops.index.change_listeners.remove(self.on_changes)
        if self._on_transition in self.ops.index.observers:
            self.ops.index.observers.remove(self._on_transition)
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
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
        logger.info("dropped a slow live feed client (%d messages, %d bytes queued)",
                    sub.pending_messages, sub.pending_bytes)

    def attach(self, sub: Subscriber, *, resume_seq: int | None = None) -> None:
        """Start feeding ``sub``: what it missed since ``resume_seq``, else a snapshot."""
        self.subscribers.add(sub)
        if resume_seq is not None and self.replay(sub, resume_seq):
            return
        self.send_snapshot(sub, resync=resume_seq is not None)

    def detach(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def subscribe(self, sub: Subscriber, filters: Filters, limit: int) -> None:
        sub.filters = filters
        sub.limit = limit
        self.send_snapshot(sub)

    def on_alert(self, event: str, alert: dict[str, Any]) -> None:
        """An alert was raised, updated or resolved (health's ``alert_listeners``).

        Only noted here; the next flush sends it (see the module docstring).
        """
        if not self.subscribers:
            self._parts_cache = None
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
        self._parts_cache = None
        if len(alerts) * len(self.subscribers) > ALERT_WRITES_PER_FLUSH:
            self.stats["alerts_deferred"] += len(alerts)
            return
        for event, alert in alerts.values():
            seq = self.next_seq()
            message = encode({"type": "alert", "seq": seq, "time": time.time(),
                              "event": event, "alert": alert}).encode()
            for sub in list(self.subscribers):
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

    def _on_transition(self, uuid: str, old_state: str | None, task: Any) -> None:
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
        data = self.ops.index.state.tasks.data
        summaries = self.ops.tasks.summaries  # shared with listings and snapshots
        tasks: list[dict[str, Any]] = []
        removed: list[str] = []
        for uuid in pending:
            task = data.get(uuid)
            if task is None:
                removed.append(uuid)
            else:
                # Unknown (null) fields are left out: a task's fields only go
                # from unknown to known, and it makes every delta smaller.
                summary = summaries.get(uuid, task)
                tasks.append({k: v for k, v in summary.items() if v is not None})
        if not tasks and not removed:
            return
        tasks.sort(key=_task_time)
        self._tasks_cache.clear()
        delta = _Delta(seq=self.next_seq(), time=time.time(), tasks=tasks, removed=removed,
                       prev_states={t["id"]: prev_states[t["id"]] for t in tasks
                                    if t["id"] in prev_states})
        self._remember(delta)
        self.stats["flushes"] += 1
        for sub in list(self.subscribers):
            message = self._delta_message(delta, sub.filters)
            if message is not None and sub.send(message, delta.seq):
                self.stats["messages"] += 1
        # Only the raw tasks stay in the replay buffer
        delta.encoded = {}
        # Under load (many clients, many changes) flush less often: fewer,
        # larger, more coalesced messages keep the IOLoop responsive.
        spent = self.io_loop.time() - self._last_flush
        self._flush_interval = min(MAX_FLUSH_SECONDS,
                                   max(self.flush_seconds, FLUSH_LOAD_FACTOR * spent))

    def _delta_message(self, delta: _Delta, filters: Filters) -> bytes | None:
        cached = delta.encoded.get(filters)
        if cached is not None:
            return cached or None
        tasks = delta.tasks if filters.empty else [t for t in delta.tasks
                                                   if _wants(filters, t, delta.prev_states)]
        if not tasks and not delta.removed:
            delta.encoded[filters] = b""
            return None
        message = encode({"type": "tasks", "seq": delta.seq, "time": delta.time,
                          "tasks": tasks, "removed": delta.removed}).encode()
        delta.encoded[filters] = message
        return message

    def _remember(self, delta: _Delta) -> None:
        if self.replay_capacity <= 0:
            self._floor = delta.seq
            return
        self._buffer.append(delta)
        self._buffered_tasks += len(delta.tasks) + len(delta.removed)
        while self._buffered_tasks > self.replay_capacity and self._buffer:
            old = self._buffer.popleft()
            self._buffered_tasks -= len(old.tasks) + len(old.removed)
            self._floor = old.seq

    def replay(self, sub: Subscriber, since_seq: int) -> bool:
        """Send the deltas after ``since_seq``; False when they are no longer all held."""
        if since_seq < self._floor or since_seq > self._seq:
            return False
        replayed = 0
        for delta in self._buffer:
            if delta.seq <= since_seq:
                continue
            message = self._delta_message(delta, sub.filters)
            delta.encoded = {}
            if message is not None:
                if not sub.send(message, delta.seq):
                    return True
                replayed += 1
        self.send(sub, {"type": "resumed", "from_seq": since_seq, "replayed": replayed})
        return True

    # -- snapshots ------------------------------------------------------------------

    def snapshot_parts(self) -> dict[str, Any]:
        ops = self.ops
        parts: dict[str, Any] = {"stats": ops.stats.stats(),
                                 "workers": ops.workers.list().get("workers", [])}
        try:
            parts["queues"] = ops.queues.list().get("queues", [])
        except Unavailable as exc:
            parts["queues"] = None
            parts["queues_error"] = exc.message
        parts["alerts"] = parts["stats"].get("alerts", [])
        return parts

    def snapshot_tasks(self, filters: Filters, limit: int) -> dict[str, Any]:
        queries = filters.queries(limit)
        pages = [self.ops.tasks.list_memory(q) for q in queries]
        if len(pages) == 1:
            return {"tasks": pages[0].tasks, "total": pages[0].total}
        merged = sorted((t for p in pages for t in p.tasks), key=_task_time, reverse=True)
        return {"tasks": merged[:limit], "total": sum(p.total for p in pages)}

    def _tasks_json(self, filters: Filters, limit: int) -> str:
        key = (filters, limit)
        tasks_json = self._tasks_cache.get(key)
        if tasks_json is None:
            tasks_json = self._tasks_cache[key] = encode(self.snapshot_tasks(filters, limit))
        return tasks_json

    @staticmethod
    def _snapshot_message(seq: int, parts_json: str, tasks_json: str, filters: Filters,
                          resync: bool = False) -> bytes:
        head = encode({"type": "snapshot", "seq": seq, "time": time.time(),
                       "filters": filters.as_json(), "resync": resync})
        # Shared pieces are encoded once, then spliced in.
        return f"{head[:-1]},{tasks_json[1:-1]},{parts_json[1:]}".encode()

    def _parts_json(self, *, fresh: bool) -> str:
        now = self.io_loop.time()
        cached = self._parts_cache
        if not fresh and cached is not None and now - cached[0] < PARTS_MAX_AGE_SECONDS:
            return cached[1]
        parts_json = encode(self.snapshot_parts())
        self._parts_cache = (now, parts_json)
        return parts_json

    def send_snapshot(self, sub: Subscriber, *, resync: bool = False) -> None:
        parts_json = self._parts_json(fresh=False)
        tasks_json = self._tasks_json(sub.filters, sub.limit)
        # The seq is taken once the pieces are built: building them syncs the
        # index and evaluates alerts, which may send alert messages first, and
        # those must not carry a higher seq than this snapshot.
        seq = self.next_seq()
        sub.send(self._snapshot_message(seq, parts_json, tasks_json, sub.filters, resync), seq)

    def broadcast_snapshot(self) -> None:
        if not self.subscribers:
            return
        try:
            self._broadcast_snapshot()
        except Exception:
            logger.exception("live feed snapshot failed")

    def _broadcast_snapshot(self) -> None:
        parts_json = self._parts_json(fresh=True)
        tasks_json = {key: self._tasks_json(*key)
                      for key in {(sub.filters, sub.limit) for sub in self.subscribers}}
        seq = self.next_seq()  # after building, as in send_snapshot
        messages: dict[tuple[Filters, int], bytes] = {}
        self.stats["snapshots"] += 1
        for sub in list(self.subscribers):
            key = (sub.filters, sub.limit)
            message = messages.get(key)
            if message is None:
                # Building only ever drops subscribers (a slow one), never adds
                message = messages[key] = self._snapshot_message(seq, parts_json,
                                                                 tasks_json[key], key[0])
            sub.send(message, seq)


def _task_time(task: dict[str, Any]) -> float:
    return float(task.get("sent") or task.get("received") or task.get("started")
                 or task.get("timestamp") or 0.0)


def _wants(filters: Filters, task: dict[str, Any], prev_states: dict[str, str | None]) -> bool:
    if filters.matches(task):
        return True
    # A task that just left a state filter is still sent once, so clients can
    # drop it from a list filtered by state.
    if filters.states and prev_states.get(task["id"]) in filters.states:
        return filters.matches({**task, "state": prev_states[task["id"]]})
    return False


def extend(ops: FlowerOps) -> None:
    from flower_ops.monitor.http.ws import register

    feed = LiveFeed(ops)
    ops.live = feed  # type: ignore[attr-defined]
    ops.on_start.append(feed.start)
    ops.on_stop.append(feed.stop)
    # Pushed as they happen; the health extension adopts this list whichever runs first
    vars(ops).setdefault("alert_listeners", []).append(feed.on_alert)
    register(ops)


__all__ = ["ALL", "Filters", "LiveFeed", "Subscriber", "encode", "extend", "parse_filters",
           "parse_limit"]
