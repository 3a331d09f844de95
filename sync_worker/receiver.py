"""Events in (no SQL): our own Celery event receiver, on its own connection.

``EventConsumer.run`` is a network loop: it connects, consumes until the
broker goes away or ``stop()`` is called, and reconnects with capped backoff
and jitter. Every (re)connection calls ``on_connected`` because Redis pub/sub
dropped whatever was published while we were away: the runner reconciles.

On a plain Redis broker events come through ``redis_events`` (our own
PSUBSCRIBE and decoder, many events per wake-up); on any other broker
(AMQP, sentinel...) or with ``fast_redis=False`` through Celery's
``EventReceiver``. Both hand the same event dicts to ``_handle_many``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celery import Celery

from flower_ops.core.payload import EXACT_PREFIX, decode_args
from sync_worker.backoff import Backoff
from sync_worker.redis_events import RedisEventsTarget, RedisEventStream, redis_events_target
from flower_ops.core.lifecycle import EVENT_STATES
from flower_ops.core.transitions import Transition

logger = logging.getLogger(__name__)


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _reject_constant(name: str) -> Any:
    raise ValueError(name)   # NaN, Infinity: not what a Python repr means by them


_raw_decode = json.JSONDecoder(parse_constant=_reject_constant).raw_decode


def _decode_repr(text: Any) -> tuple[Any, bool]:
    """``decode_args``, with a fast path for the common reprs that are also
    JSON once the outer tuple parentheses become brackets (``(2, 3)``, ``{}``,
    ``42``): ``json.loads`` is ~10x cheaper than ``ast.literal_eval``, and for
    such text both give the same value. Anything else goes to decode_args."""
    if isinstance(text, str) and text and text[0] in "([{-0123456789" \
            and not text.startswith(EXACT_PREFIX):
        candidate = f"[{text[1:-1]}]" if text[0] == "(" and text[-1] == ")" else text
        try:
            value, end = _raw_decode(candidate)
            if end == len(candidate):
                return value, False
        except ValueError:
            pass
    return decode_args(text)


def transition_from_event(event: dict[str, Any]) -> Transition | None:
    """Our ``Transition`` for a Celery task event; None for other events."""
    kind = event.get("type")
    mapped = EVENT_STATES.get(kind)  # type: ignore[arg-type]
    task_id = event.get("uuid")
    if mapped is None or not task_id:
        return None
    state, time_field = mapped
    timestamp = event.get("timestamp") or time.time()
    fields: dict[str, Any] = {}
    if kind == "task-sent":
        fields["queue"] = event.get("queue")
        fields["routing_key"] = event.get("routing_key")
        fields["exchange"] = event.get("exchange") or None
    else:
        fields["worker"] = event.get("hostname")
    if kind in ("task-sent", "task-received"):
        fields["task_name"] = event.get("name")
        fields["parent_id"] = event.get("parent_id")
        fields["root_id"] = event.get("root_id")
        fields["retries"] = event.get("retries")
        fields["eta"] = _epoch(event.get("eta"))
        fields["expires"] = _epoch(event.get("expires"))
        args, args_exact = _decode_repr(event.get("args"))
        kwargs, kwargs_exact = _decode_repr(event.get("kwargs"))
        fields["args"], fields["kwargs"] = args, kwargs
        fields["args_exact"] = args_exact and kwargs_exact
    elif kind == "task-succeeded":
        fields["result"] = _decode_repr(event.get("result"))[0]
        fields["runtime"] = event.get("runtime")
    elif kind in ("task-failed", "task-retried"):
        fields["error"] = event.get("exception")
        fields["traceback"] = event.get("traceback")
    elif kind == "task-revoked":
        reason = "expired" if event.get("expired") else (
            "terminated" if event.get("terminated") else "revoked")
        fields["reason"] = reason
        fields["error"] = f"TaskRevokedError: {reason}"
    elif kind == "task-rejected":
        fields["error"] = "Rejected: the worker rejected the message"
    return Transition(str(task_id), state, float(timestamp), time_field, fields)


class WorkerLiveness:
    """Which workers are alive, from their heartbeats (thread-safe).

    A worker's silence only counts while we could have heard it. Time during
    which our own event connection was down, or stalled (nothing received for
    longer than ``max_quiet_seconds``, although the stream pings when idle),
    is deafness, not evidence: when hearing resumes every worker's clock is
    moved forward by it, and while it lasts nobody is declared lost. Without
    that, a partition between us and the broker longer than
    ``lost_after_seconds`` would fail the running tasks of every healthy
    worker.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_quiet_seconds: float | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._offline: dict[str, float] = {}
        self._listening_since: float | None = None
        self._max_quiet = max_quiet_seconds   # None: the stream cannot tell (no pings)
        self._heard_at: float | None = None   # our stream last received something
        self._deaf_since: float | None = None  # connection lost at (last heard) ...

    def _shift(self, seconds: float) -> None:
        """The last ``seconds`` were deaf: they do not count as anyone's silence."""
        if seconds <= 0:
            return
        for clocks in (self._last_seen, self._offline):
            for name in clocks:
                clocks[name] += seconds
        if self._listening_since is not None:
            self._listening_since += seconds

    def listening(self) -> None:
        """(Re)subscribed: we hear again."""
        with self._lock:
            now = self._clock()
            if self._listening_since is None:
                self._listening_since = now
            if self._deaf_since is not None:
                self._shift(now - self._deaf_since)
                self._deaf_since = None
            self._heard_at = now

    def expect_hearing_every(self, seconds: float | None) -> None:
        """The stream proves itself alive (events or ping replies) at least
        this often; longer quiet is a stall. None: it cannot tell."""
        with self._lock:
            self._max_quiet = seconds

    def connection_lost(self) -> None:
        with self._lock:
            if self._deaf_since is None:
                self._deaf_since = self._heard_at if self._heard_at is not None \
                    else self._clock()

    def heard(self) -> None:
        """The event stream received something (events, or a reply to its ping)."""
        with self._lock:
            now = self._clock()
            if self._deaf_since is None and self._heard_at is not None and \
                    self._max_quiet is not None and now - self._heard_at > self._max_quiet:
                self._shift(now - self._heard_at)    # a stall, not a quiet minute
            self._heard_at = now

    def seen(self, hostname: str) -> None:
        with self._lock:
            self._last_seen[hostname] = self._clock()
            self._offline.pop(hostname, None)

    def went_offline(self, hostname: str) -> None:
        with self._lock:
            self._offline[hostname] = self._clock()

    def _deaf(self, now: float) -> bool:
        if self._deaf_since is not None:
            return True
        return self._max_quiet is not None and self._heard_at is not None and \
            now - self._heard_at > self._max_quiet

    def is_lost(self, hostname: str | None, *, lost_after_seconds: float,
                offline_grace_seconds: float = 2.0) -> bool:
        """True when ``hostname`` is known to be gone: it said goodbye, its
        heartbeats stopped for ``lost_after_seconds``, or we have listened
        that long without hearing from it at all. Never while we are deaf."""
        if not hostname:
            return False
        now = self._clock()
        with self._lock:
            if self._deaf(now):
                return False
            offline_at = self._offline.get(hostname)
            if offline_at is not None:
                return now - offline_at >= offline_grace_seconds
            last = self._last_seen.get(hostname)
            if last is not None:
                return now - last >= lost_after_seconds
            since = self._listening_since
            return since is not None and now - since >= lost_after_seconds

    def known(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_seen)


class EventConsumer:
    """Consumes every Celery event from the broker until stopped."""

    def __init__(self, *, app: Celery, sink: Callable[[Transition], None],
                 liveness: WorkerLiveness, on_connected: Callable[[], None],
                 backoff: Backoff, on_event: Callable[[], None] | None = None,
                 on_reconnect: Callable[[], None] | None = None,
                 sink_many: Callable[[list[Transition]], None] | None = None,
                 fast_redis: bool = True, idle_ping_seconds: float = 15.0) -> None:
        self._app = app
        self._idle_ping = idle_ping_seconds
        self._sink = sink
        self._sink_many = sink_many or self._sink_each
        self._fast_redis = fast_redis
        self._stream: RedisEventStream | None = None
        self.path: str | None = None          # "redis-pubsub" or "kombu", once connected
        self._liveness = liveness
        self._on_connected = on_connected
        self._on_event = on_event
        self._on_reconnect = on_reconnect
        self._backoff = backoff
        self._stop = threading.Event()
        self._receiver: Any = None
        self.connected = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        receiver = self._receiver
        if receiver is not None:
            receiver.should_stop = True

    def _sink_each(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            self._sink(transition)

    def _handle(self, event: dict[str, Any]) -> None:
        self._handle_many([event])

    def _handle_many(self, events: list[dict[str, Any]]) -> None:
        transitions: list[Transition] = []
        liveness = self._liveness
        for event in events:
            kind = event.get("type", "")
            if kind.startswith("task-"):
                transition = transition_from_event(event)
                if transition is not None:
                    transitions.append(transition)
            elif kind in ("worker-heartbeat", "worker-online"):
                hostname = event.get("hostname")
                if hostname:
                    liveness.seen(hostname)
            elif kind == "worker-offline":
                hostname = event.get("hostname")
                if hostname:
                    liveness.went_offline(hostname)
            if self._on_event is not None:
                self._on_event()
        if transitions:
            self._sink_many(transitions)

    def _subscribed(self, *, first: bool, where: str) -> None:
        # subscribed: reconciling from here on leaves no gap behind
        self.connected.set()
        self._liveness.listening()
        if not first and self._on_reconnect is not None:
            self._on_reconnect()
        logger.info("listening to Celery events on %s (%s)", where, self.path)
        self._backoff.reset()
        self._on_connected()

    def _ready_hook(self, receiver: Any, first: bool, conn: Any) -> Callable[..., None]:
        original = receiver.on_consume_ready

        def ready(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            self._subscribed(first=first, where=conn.as_uri())
        return ready

    def _run_redis(self, conn: Any, target: RedisEventsTarget, first: bool) -> None:
        def subscribed() -> None:
            try:   # what EventReceiver's wakeup does: workers send a heartbeat now
                self._app.control.broadcast("heartbeat", connection=conn)
            except Exception as exc:  # noqa: BLE001 - liveness only, events still flow
                logger.warning("could not ask workers for a heartbeat: %s", exc)
            self._subscribed(first=first, where=target.description)

        # the stream pings after idle_ping quiet seconds: quiet much longer is a stall
        self._liveness.expect_hearing_every(self._idle_ping + max(1.0, self._idle_ping / 2))
        stream = RedisEventStream(target, handle_many=self._handle_many,
                                  on_subscribed=subscribed, should_stop=self._stop.is_set,
                                  idle_ping_seconds=self._idle_ping,
                                  on_received=self._liveness.heard)
        self._stream = stream
        try:
            stream.run()
        finally:
            self._stream = None
            stream.close()

    def run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with self._app.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=1)
                    target = redis_events_target(
                        conn, exchange=self._app.conf.event_exchange or "celeryev",
                        serializer=self._app.conf.event_serializer or "json") \
                        if self._fast_redis else None
                    if target is not None:
                        self.path = "redis-pubsub"
                        was_first, first = first, False
                        self._run_redis(conn, target, was_first)
                        continue
                    self.path = "kombu"
                    self._liveness.expect_hearing_every(None)
                    receiver = self._app.events.Receiver(conn, handlers={"*": self._handle})
                    self._receiver = receiver
                    if self._stop.is_set():
                        return
                    receiver.on_consume_ready = self._ready_hook(receiver, first, conn)
                    first = False
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:
                self.connected.clear()
                self._liveness.connection_lost()
                if self._stop.is_set():
                    return
                delay = self._backoff.next_delay()
                if isinstance(exc, (ConnectionError, OSError)) or \
                        type(exc).__name__ in ("OperationalError", "ConnectionError", "TimeoutError"):
                    logger.warning("broker connection lost (%s); reconnecting in %.1fs",
                                   exc, delay)
                else:
                    logger.exception("event consumer failed; reconnecting in %.1fs", delay)
                self._stop.wait(delay)
            finally:
                self._receiver = None
        self.connected.clear()
