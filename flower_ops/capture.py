"""Lossless capture: every task event a process sends, also appended to a
Redis stream on the broker's Redis, for the sync workers' consumer group.

``instrument(app)`` makes Celery's event dispatcher a ``CapturingDispatcher``.
Every publish goes through ``EventDispatcher._publish`` (``publish`` for
``task-sent``, ``send`` unbuffered, and the worker's ``flush`` of its
buffered ``task`` group as one list): there each task event not yet captured
is handed to this process's ``StreamCapture`` and marked ``fo_captured`` (so
a re-publish from Celery's offline buffer is not captured twice, and the
sync worker's pub/sub listener can skip what the stream delivers).

``StreamCapture.add`` only appends to a deque: no I/O, no lock, no
serialization on the task's path. A background thread (started lazily per
pid: prefork children and forked publishers get their own) wakes when
something is pending, waits ``flush_ms`` for more, and writes the batch with
one pipelined round trip: one stream entry per chunk of up to
``chunk_events`` events, ``XADD key MAXLEN ~ maxlen * n <count> e <JSON
list>``. If Redis is unreachable the deque keeps up to ``max_pending`` events
and the thread retries with capped backoff; beyond that, events are dropped,
counted and logged. Never blocks a task. At exit (``atexit``, and Celery's
``worker_process_shutdown`` in pool children) what is pending is flushed.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.events.dispatcher import EventDispatcher
from kombu.utils.json import dumps as kombu_dumps

from flower_ops.core.capture_names import CAPTURED_FIELD, DEFAULT_QUEUE, DEFAULT_STREAM_KEY
from flower_ops.core.env import ConfigError, EnvReader

logger = logging.getLogger(__name__)

_CAPTURE_ATTR = "_flower_ops_capture"


@dataclass(frozen=True)
class CaptureSettings:
    mode: str = "auto"                 # auto: the stream on Redis brokers; off
    stream_key: str = DEFAULT_STREAM_KEY
    maxlen: int = 1_000_000            # entries kept at most (XADD MAXLEN ~)
    chunk_events: int = 100            # events per stream entry at most
    flush_ms: float = 50.0             # gather this long after the first pending event
    max_pending: int = 200_000         # events held while Redis is away; beyond: dropped
    queue_name: str = DEFAULT_QUEUE    # RabbitMQ: the durable event queue workers declare

    @classmethod
    def from_env(cls, environ: Any = None, **overrides: Any) -> CaptureSettings:
        env = EnvReader(environ)
        mode = (env.text("FLOWER_OPS_CAPTURE", "auto") or "auto").lower()
        if mode not in {"auto", "off"}:
            raise ConfigError("FLOWER_OPS_CAPTURE", f"expected auto or off, got {mode!r}")
        values: dict[str, Any] = {
            "mode": mode,
            "stream_key": env.text("FLOWER_OPS_CAPTURE_STREAM", DEFAULT_STREAM_KEY)
            or DEFAULT_STREAM_KEY,
            "maxlen": env.integer("FLOWER_OPS_CAPTURE_MAXLEN", 1_000_000, minimum=1000),
            "chunk_events": env.integer("FLOWER_OPS_CAPTURE_CHUNK_EVENTS", 100, minimum=1,
                                        maximum=10_000),
            "flush_ms": env.number("FLOWER_OPS_CAPTURE_FLUSH_MS", 50.0, minimum=0.0,
                                   maximum=10_000.0),
            "max_pending": env.integer("FLOWER_OPS_CAPTURE_MAX_PENDING", 200_000,
                                       minimum=100),
            "queue_name": env.text("FLOWER_OPS_CAPTURE_QUEUE", DEFAULT_QUEUE) or DEFAULT_QUEUE,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def is_plain_redis(app: Celery) -> bool:
    """Whether ``app``'s broker is a plain Redis (not sentinel, not AMQP); no I/O."""
    transport = type(app.connection_for_write().transport)
    return transport.__module__ == "kombu.transport.redis" and transport.__name__ == "Transport"


def redis_client_for(app: Celery) -> tuple[Any, str]:
    """A redis-py client on ``app``'s broker with kombu's own connection
    parameters (db, TLS, credentials), and the transport's ``global_keyprefix``."""
    import redis

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel.client  # noqa: B018 - builds the pool, which formats {db}
        params = dict(channel._connparams())
        prefix = getattr(channel, "global_keyprefix", "") or ""
    for name in ("max_connections", "virtual_host", "health_check_interval"):
        params.pop(name, None)
    params["protocol"] = 2
    return redis.Redis(connection_pool=redis.ConnectionPool(**params)), prefix


class StreamCapture:
    """One per (app, process). ``add`` is called on the publishing thread."""

    def __init__(self, app: Celery, settings: CaptureSettings) -> None:
        self.app = app
        self.settings = settings
        self.dropped = 0
        self.written = 0
        self._active: bool | None = None
        self._reset()

    @property
    def active(self) -> bool:
        """Whether the broker is a plain Redis (decided at the first event:
        the app's configuration may be completed after ``instrument``)."""
        active = self._active
        if active is None:
            try:
                active = is_plain_redis(self.app)
            except Exception:  # noqa: BLE001 - an unknown transport: no capture
                active = False
            self._active = active
        return active

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()        # one writer at a time (thread or exit flush)
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._broker: Any = None
        self._key = ""
        self._failures = 0

    def add(self, event: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            self._reset()                    # a forked child: its own buffer and thread
        pending = self._pending
        if len(pending) >= self.settings.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                logger.error("flower-ops capture: Redis stream unreachable and %d events "
                             "pending: dropped %d so far (reconciliation repairs final "
                             "states)", len(pending), self.dropped)
            return
        pending.append(event)
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flower-ops-capture",
                                          daemon=True)
                self._thread = thread
                thread.start()

    def _run(self) -> None:
        delay = self.settings.flush_ms / 1000.0
        while True:
            self._wake.wait()
            if delay:
                time.sleep(delay)
            self._wake.clear()
            if not self.flush():
                time.sleep(min(5.0, 0.05 * (2 ** min(self._failures, 7))))
                self._wake.set()

    def flush(self) -> bool:
        """Write everything pending; False (entries kept) if Redis failed."""
        with self._lock:
            while self._pending:
                if not self._write_some():
                    return False
            return True

    def _write_some(self) -> bool:
        settings = self.settings
        pending = self._pending
        batch: list[dict[str, Any]] = []
        while pending and len(batch) < 5000:
            batch.append(pending.popleft())
        try:
            broker = self.app.conf.broker_url
            if self._client is None or broker != self._broker:
                client, prefix = redis_client_for(self.app)
                self._client, self._key = client, prefix + settings.stream_key
                self._broker = broker
            pipe = self._client.pipeline(transaction=False)
            size = settings.chunk_events
            for start in range(0, len(batch), size):
                chunk = batch[start:start + size]
                pipe.execute_command("XADD", self._key, "MAXLEN", "~", settings.maxlen, "*",
                                     "n", len(chunk), "e", kombu_dumps(chunk))
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - never let capture break the app
            pending.extendleft(reversed(batch))
            self._failures += 1
            if self._failures == 1 or self._failures % 50 == 0:
                logger.warning("flower-ops capture: cannot write to the Redis stream (%s); "
                               "%d events kept, retrying", exc, len(pending))
            self._client = None
            return False
        if self._failures:
            logger.info("flower-ops capture: Redis stream reachable again")
            self._failures = 0
        self.written += len(batch)
        return True

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Flush what is pending (exit), retrying for up to ``timeout_seconds``."""
        if self._pid != os.getpid():
            return
        deadline = time.monotonic() + timeout_seconds
        while self._pending and not self.flush() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._pending:
            logger.error("flower-ops capture: exiting with %d events not written to the "
                         "stream", len(self._pending))


def capture_of(app: Celery) -> StreamCapture | None:
    capture: StreamCapture | None = getattr(app, _CAPTURE_ATTR, None)
    return capture


class CapturingDispatcher(EventDispatcher):
    """Celery's dispatcher; task events also go to the app's ``StreamCapture``."""

    def _publish(self, event: Any, producer: Any, routing_key: Any, *args: Any,
                 **kwargs: Any) -> Any:
        capture = capture_of(self.app) if producer is not None else None
        if capture is not None and capture.active:
            for one in (event if isinstance(event, list) else (event,)):
                if CAPTURED_FIELD not in one and str(one.get("type", "")).startswith("task-"):
                    capture.add(dict(one))
                    one[CAPTURED_FIELD] = 1
        return super()._publish(event, producer, routing_key, *args, **kwargs)


def enable_capture(app: Celery, settings: CaptureSettings) -> StreamCapture | None:
    """Hook ``app``'s event dispatcher (None when capture is off); events are
    captured only if the broker turns out to be a plain Redis."""
    if settings.mode == "off":
        return None
    capture = StreamCapture(app, settings)
    setattr(app, _CAPTURE_ATTR, capture)
    events = app.events
    events.__dict__.pop("Dispatcher", None)      # built again from our class
    events.dispatcher_cls = CapturingDispatcher
    # an AMQP helper built already holds the dispatcher task-sent goes through
    built = app.__dict__.get("amqp")
    evd = built.__dict__.get("_event_dispatcher") if built is not None else None
    if evd is not None and not isinstance(evd, CapturingDispatcher):
        evd.__class__ = CapturingDispatcher
    atexit.register(capture.close)
    from celery import signals

    def on_child_exit(**_: Any) -> None:
        capture.close()

    signals.worker_process_shutdown.connect(on_child_exit, weak=False)

    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            declare_durable_queue(app, settings.queue_name)

    signals.worker_ready.connect(on_worker_ready, weak=False)
    return capture


def declare_durable_queue(app: Celery, name: str) -> bool:
    """On a RabbitMQ broker, the durable queue the sync workers read (bound to
    the event exchange with ``task.#``), so that the task events sent before
    the first sync worker starts are kept. False elsewhere or on failure."""
    from kombu import Exchange, Queue

    try:
        with app.connection_for_write() as conn:
            if getattr(conn.transport, "driver_type", None) != "amqp":
                return False
            exchange = Exchange(app.conf.event_exchange or "celeryev", type="topic")
            Queue(name, exchange, routing_key="task.#", durable=True,
                  auto_delete=False)(conn.default_channel).declare()
        return True
    except Exception as exc:  # noqa: BLE001 - the worker runs on without it
        logger.warning("flower-ops capture: could not declare the event queue %s (%s); the "
                       "sync workers declare it when they start", name, exc)
        return False
