"""The discovery thread of a leadership term: passes over the result backend
and the broker's queues (``discovery.py``) for tasks that have no row.

A pass runs when asked (``request``: on start, after every broker reconnect,
whenever events were dropped) and every ``discovery_interval_seconds``, in
bounded ticks with a pause between them; a pass that left tasks to their
live events (they finished a moment ago) is followed by another soon.
Failures are retried with capped backoff, rebuilding the readers.
"""
from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from flower_ops.db.batch import PgExecutionStore
from sync_worker.backoff import describe, is_connection_error
from sync_worker.config import SyncWorkerConfig
from sync_worker.discovery import QueueDiscovery, ResultDiscovery, queue_discovery_for
from sync_worker.metrics import SyncMetrics

logger = logging.getLogger(__name__)


class DiscoveryLoop:
    def __init__(self, config: SyncWorkerConfig, *, app: Celery, store: PgExecutionStore,
                 metrics: SyncMetrics) -> None:
        self._config = config
        self._app = app
        self._store = store
        self._metrics = metrics
        self._now = threading.Event()
        self.passes = 0          # passes completed, over all terms

    def request(self) -> None:
        """Run a pass as soon as possible (also wakes ``run`` to see its term end)."""
        self._now.set()

    def _build(self) -> tuple[ResultDiscovery | None, QueueDiscovery | None]:
        config = self._config
        oldest = time.time() - config.retention_days * 86400 if config.retention_days else None
        backend = self._app.backend
        results = ResultDiscovery(backend=backend, store=self._store,
                                  max_keys=config.discovery_batch_size,
                                  settle_seconds=config.reconcile_settle_seconds,
                                  oldest_epoch=oldest) \
            if ResultDiscovery.supports(backend) else None
        queued = None
        if config.discover_queued_max:
            with self._app.connection_for_read() as conn:
                queued = queue_discovery_for(self._app, conn, store=self._store,
                                             max_messages_per_queue=config.discover_queued_max)
        if results is None and queued is None:
            logger.info("discovery: neither the result backend nor the broker is a plain "
                        "Redis; only reconciliation of existing rows runs")
        return results, queued

    def run(self, term: threading.Event) -> None:
        """Until ``term`` is set (then ``request`` to wake it)."""
        config = self._config
        backoff = config.backoff()
        built = False
        results: ResultDiscovery | None = None
        queued: QueueDiscovery | None = None
        next_pass = time.monotonic()
        while not term.is_set():
            self._now.wait(max(0.0, next_pass - time.monotonic()))
            if term.is_set():
                break
            self._now.clear()
            try:
                if not built:
                    results, queued = self._build()
                    built = True
                inserted = recent = scanned = 0
                if results is not None:
                    results.restart()
                    while not term.is_set():
                        tick = results.tick()
                        scanned += tick.scanned
                        inserted += tick.inserted
                        recent += tick.recent
                        self._metrics.discovered.labels("backend").inc(tick.inserted)
                        if tick.pass_done:
                            break
                        term.wait(config.discovery_pause_seconds)
                if queued is not None and not term.is_set():
                    tick = queued.run_pass(should_stop=term.is_set)
                    self._metrics.discovered.labels("queue").inc(tick.inserted)
                    inserted += tick.inserted
                self.passes += 1
                if inserted:
                    logger.info("discovery: %d rows created for tasks no event was seen for "
                                "(%d result keys scanned)", inserted, scanned)
                # tasks that finished a moment ago were left to their events; look again soon
                wait = config.reconcile_settle_seconds + 0.5 if recent else \
                    config.discovery_interval_seconds
                next_pass = time.monotonic() + wait
                backoff.reset()
            except Exception as exc:
                built = False
                delay = backoff.next_delay()
                if is_connection_error(exc):
                    logger.warning("discovery failed (%s); retrying in %.1fs",
                                   describe(exc), delay)
                else:
                    logger.exception("discovery failed; retrying in %.1fs", delay)
                next_pass = time.monotonic() + delay
