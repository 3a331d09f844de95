"""Events in, losslessly, on RabbitMQ: a durable queue bound to Celery's
event exchange (``celeryev``, topic) with ``task.#``, read by every replica
(competing consumers, a prefetch, manual acknowledgement after the commit).

The queue is declared here and by ``instrument(app)`` when a worker starts
(``flower_ops/capture.py``), so task events published before the first sync
worker are kept. It holds every task event of every app on the exchange,
instrumented or not: with it, the leader's pub/sub listener takes no task
events (liveness only). A replica that dies leaves its unacknowledged
messages to RabbitMQ, which delivers them to the others.

Acknowledgements come from the writer's thread; an AMQP channel is not
thread-safe, so they are queued and sent by the consuming thread between
reads. Tokens carry the channel's generation: after a reconnection the old
delivery tags mean nothing (RabbitMQ delivers those messages again).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from typing import Any

from celery import Celery
from kombu import Consumer, Exchange, Queue

from flower_ops.core.transitions import Transition
from sync_worker.buffer import EventBuffer
from sync_worker.config import SyncWorkerConfig
from sync_worker.events import transition_from_event
from sync_worker.metrics import SyncMetrics

logger = logging.getLogger(__name__)


def is_amqp(app: Celery) -> bool:
    """Whether ``app``'s broker is AMQP (RabbitMQ); no I/O."""
    return getattr(app.connection_for_read().transport, "driver_type", None) == "amqp"


def durable_queue(app: Celery, name: str) -> Queue:
    exchange = Exchange(app.conf.event_exchange or "celeryev", type="topic")
    return Queue(name, exchange, routing_key="task.#", durable=True, auto_delete=False)


class QueueConsumer:
    def __init__(self, config: SyncWorkerConfig, *, app: Celery, buffer: EventBuffer,
                 metrics: SyncMetrics) -> None:
        self._config = config
        self._app = app
        self._buffer = buffer
        self._metrics = metrics
        self._acks: deque[tuple[int, int]] = deque()
        self._generation = 0
        self._stop = threading.Event()
        self.connected = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Nothing to close: the connection lives in ``run``."""

    def ack(self, tokens: list[Any]) -> None:
        """From the writer: sent by the consuming thread between reads."""
        self._acks.extend(tokens)

    def run(self) -> None:
        backoff = self._config.backoff()
        while not self._stop.is_set():
            try:
                with self._app.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=1)
                    self._consume(conn)
                    backoff.reset()
            except Exception as exc:  # noqa: BLE001 - a network loop: log, back off, again
                self.connected.clear()
                if self._stop.is_set():
                    break
                delay = backoff.next_delay()
                logger.warning("event queue consumer: broker unavailable (%s); reconnecting "
                               "in %.1fs", exc, delay)
                self._metrics.reconnects.labels("queue").inc()
                self._stop.wait(delay)
        self._drain_acks(None, -1)
        self.connected.clear()

    def _consume(self, conn: Any) -> None:
        channel = conn.channel()
        queue = durable_queue(self._app, self._config.queue_name)(channel)
        queue.declare()
        channel.basic_qos(0, self._config.queue_prefetch, False)
        self._generation += 1
        generation = self._generation

        def on_message(body: Any, message: Any) -> None:
            self._on_message(body, message, generation)

        with Consumer(channel, queues=[queue], callbacks=[on_message],
                      accept=["json"], no_ack=False):
            self.connected.set()
            logger.info("event queue consumer reading %s on %s (prefetch %d)",
                        self._config.queue_name, conn.as_uri(), self._config.queue_prefetch)
            while not self._stop.is_set():
                self._drain_acks(channel, generation)
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.1)
            self._drain_acks(channel, generation)

    def _drain_acks(self, channel: Any, generation: int) -> None:
        acks = self._acks
        sent = 0
        while acks:
            token_generation, tag = acks.popleft()
            if channel is not None and token_generation == generation:
                channel.basic_ack(tag)
                sent += 1
        if sent:
            self._metrics.stream_acked.inc(sent)

    def _on_message(self, body: Any, message: Any, generation: int) -> None:
        transitions: list[Transition] = []
        for event in body if isinstance(body, list) else [body]:
            if isinstance(event, dict):
                transition = transition_from_event(event)
                if transition is not None:
                    transitions.append(transition)
        self._metrics.stream_read.inc()
        if transitions:
            self._buffer.put_many(transitions, [(generation, message.delivery_tag)])
        else:
            message.ack()
