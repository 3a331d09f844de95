"""The maintenance thread of a leadership term: reconciliation, then
retention.

A reconciliation pass runs when asked (``request``: on start, after every
broker reconnect, whenever events were dropped) and every
``reconcile_interval_seconds``; retention runs after a pass once every
``retention_interval_seconds`` (never with ``retention_days = 0``), in small
transactions with a pause between them, so the writer is never held up for
long. Failures are retried with capped backoff.
"""
from __future__ import annotations

import logging
import threading
import time

from flower_ops.db.retention import Retention
from sync_worker.backoff import describe, is_connection_error
from sync_worker.config import SyncWorkerConfig
from sync_worker.metrics import SyncMetrics
from sync_worker.reconcile import Reconciler

logger = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, config: SyncWorkerConfig, *, reconciler: Reconciler,
                 retention: Retention, metrics: SyncMetrics) -> None:
        self._config = config
        self._reconciler = reconciler
        self._retention = retention
        self._metrics = metrics
        self._now = threading.Event()
        self.passes = 0          # reconciliation passes completed, over all terms

    def request(self) -> None:
        """Reconcile as soon as possible (also wakes ``run`` to see its term end)."""
        self._now.set()

    def run(self, term: threading.Event) -> None:
        """Until ``term`` is set (then ``request`` to wake it)."""
        backoff = self._config.backoff()
        next_retention = time.monotonic()
        while not term.is_set():
            self._now.wait(self._config.reconcile_interval_seconds)
            if term.is_set():
                break
            self._now.clear()
            try:
                report = self._reconciler.run_once(should_stop=term.is_set)
                self.passes += 1
                self._metrics.reconcile_runs.inc()
                if report.checked:
                    logger.debug("reconcile pass: %s", report)
                if self._config.retention_days > 0 and time.monotonic() >= next_retention:
                    self._apply_retention(term)
                    next_retention = time.monotonic() + self._config.retention_interval_seconds
                backoff.reset()
            except Exception as exc:
                delay = backoff.next_delay()
                if is_connection_error(exc):
                    logger.warning("reconciliation failed (%s); retrying in %.1fs",
                                   describe(exc), delay)
                else:
                    logger.exception("reconciliation failed; retrying in %.1fs", delay)
                term.wait(delay)
                self._now.set()

    def _apply_retention(self, term: threading.Event) -> None:
        config = self._config
        archive = config.retention_mode == "archive"
        cutoff = time.time() - config.retention_days * 86400
        total = 0
        while not term.is_set():
            removed = self._retention.purge_older_than(
                cutoff_epoch=cutoff, batch_size=config.retention_batch_size, archive=archive)
            total += removed
            self._metrics.purged.inc(removed)
            if removed < config.retention_batch_size:
                break
            term.wait(0.05)  # small batches, room for the writer between them
        if total:
            logger.info("retention: %s %d rows older than %g days",
                        "archived" if archive else "deleted", total, config.retention_days)
