"""Events in (no SQL): our own Celery event receiver, on its own connection.

``EventConsumer.run`` is a network loop: it connects, consumes until the
broker goes away or ``stop()`` is called, and reconnects with capped backoff
and jitter. Every (re)connection calls ``on_connected`` because Redis pub/sub
dropped whatever was published while we were away: the runner reconciles.

On a plain Redis broker events come through ``redis_events`` (our own
PSUBSCRIBE and decoder, many events per wake-up); on any other broker
(AMQP, sentinel...) or with ``fast_redis=False`` through Celery's
``EventReceiver``. Both hand the same event dicts to ``_handle_many``, which
turns task events into transitions (``events.py``) and worker events into
liveness (``liveness.py``).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery

from flower_ops.core.capture_names import CAPTURED_FIELD
from flower_ops.core.times import local_utcoffset_hours, sender_timestamp
from flower_ops.core.transitions import Transition
from sync_worker.backoff import Backoff, is_connection_error
from sync_worker.events import transition_from_event
from sync_worker.liveness import WorkerLiveness
from sync_worker.redis_events import RedisEventsTarget, RedisEventStream, redis_events_target

logger = logging.getLogger(__name__)


class EventConsumer:
    """Consumes every Celery event from the broker until stopped."""

    def __init__(self, *, app: Celery, sink: Callable[[Transition], None],
                 liveness: WorkerLiveness, on_connected: Callable[[], None],
                 backoff: Backoff, on_event: Callable[[], None] | None = None,
                 on_reconnect: Callable[[], None] | None = None,
                 sink_many: Callable[[list[Transition]], None] | None = None,
                 fast_redis: bool = True, idle_ping_seconds: float = 15.0,
                 skip_task_events: str = "none",
                 on_skipped: Callable[[int], None] | None = None) -> None:
        # "captured": the stream delivers events marked fo_captured; "all":
        # task events come from the stream only (pub/sub for liveness)
        self._skip = skip_task_events
        self._on_skipped = on_skipped
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

    def _handle_kombu(self, event: dict[str, Any]) -> None:
        # Celery's EventReceiver shifted the timestamp by the sender's and our
        # UTC offsets' gap: put back what the sender stamped
        timestamp = sender_timestamp(event, local_utcoffset_hours())
        if timestamp is not None:
            event["timestamp"] = timestamp
        self._handle_many([event])

    def _handle_many(self, events: list[dict[str, Any]]) -> None:
        transitions: list[Transition] = []
        liveness = self._liveness
        skip = self._skip
        skipped = 0
        for event in events:
            kind = event.get("type", "")
            if kind.startswith("task-"):
                if skip != "none" and (skip == "all" or CAPTURED_FIELD in event):
                    skipped += 1
                    continue
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
        if skipped and self._on_skipped is not None:
            self._on_skipped(skipped)
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
                    receiver = self._app.events.Receiver(conn,
                                                         handlers={"*": self._handle_kombu})
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
                if is_connection_error(exc):
                    logger.warning("broker connection lost (%s); reconnecting in %.1fs",
                                   exc, delay)
                else:
                    logger.exception("event consumer failed; reconnecting in %.1fs", delay)
                self._stop.wait(delay)
            finally:
                self._receiver = None
        self.connected.clear()
