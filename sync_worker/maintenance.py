"""The maintenance thread of a leadership term: partitions, reconciliation,
retention, and the partition migration's mover.

Partitions: today's and ``partitions_ahead_days`` ahead are created at the
start of the term and then every ``retention_interval_seconds`` (at least
hourly), whatever retention says. Retention (never with ``retention_days =
0``) runs with them: whole partitions older than the cutoff are detached and
dropped or archived (``flower_ops/db/retention.py``). A reconciliation pass
runs when asked (``request``: on start, after every broker reconnect,
whenever events were dropped) and every ``reconcile_interval_seconds``;
before it, a task written twice around midnight by two writers at once is
folded into one row (``flower_ops/db/duplicates.py``). While a legacy
partition exists (``migrations/0005``), the mover empties it between
passes, a transaction of ``retention_batch_size`` rows at a time, in slices
of about a second with room for the writer between batches.
Failures are retried with capped backoff.
"""
from __future__ import annotations

import logging
import threading
import time

import psycopg

from flower_ops.db.partitions import utc_day
from flower_ops.db.retention import Retention
from sync_worker.backoff import describe, is_connection_error
from sync_worker.config import SyncWorkerConfig
from sync_worker.metrics import SyncMetrics
from sync_worker.reconcile import Reconciler

logger = logging.getLogger(__name__)

PARTITIONS_EVERY_SECONDS = 3600.0     # at least hourly
MOVE_SLICE_SECONDS = 1.0
MOVE_PAUSE_SECONDS = 0.05


class Maintenance:
    def __init__(self, config: SyncWorkerConfig, *, reconciler: Reconciler,
                 retention: Retention, metrics: SyncMetrics) -> None:
        self._config = config
        self._reconciler = reconciler
        self._retention = retention
        self._metrics = metrics
        self._now = threading.Event()
        self.passes = 0          # reconciliation passes completed, over all terms
        self.moving = True       # a legacy partition may exist (found out on the first slice)

    def request(self) -> None:
        """Reconcile as soon as possible (also wakes ``run`` to see its term end)."""
        self._now.set()

    def run(self, term: threading.Event) -> None:
        """Until ``term`` is set (then ``request`` to wake it)."""
        backoff = self._config.backoff()
        next_reconcile = next_partitions = time.monotonic()
        while not term.is_set():
            now = time.monotonic()
            wait = max(0.0, min(next_reconcile, next_partitions) - now)
            if self.moving:
                wait = min(wait, MOVE_PAUSE_SECONDS)
            if self._now.wait(wait):
                next_reconcile = time.monotonic()
            if term.is_set():
                break
            try:
                now = time.monotonic()
                if now >= next_partitions:
                    self._partitions()
                    next_partitions = now + min(self._config.retention_interval_seconds,
                                                PARTITIONS_EVERY_SECONDS)
                if now >= next_reconcile:
                    self._now.clear()
                    # rows written since the pass before (a transaction may
                    # take up to the pool's 60 s statement timeout)
                    self._retention.fold_duplicates(
                        within_seconds=self._config.reconcile_interval_seconds + 120.0)
                    report = self._reconciler.run_once(should_stop=term.is_set)
                    self.passes += 1
                    self._metrics.reconcile_runs.inc()
                    if report.checked:
                        logger.debug("reconcile pass: %s", report)
                    next_reconcile = time.monotonic() + self._config.reconcile_interval_seconds
                if self.moving:
                    self._move_slice(term)
                backoff.reset()
            except Exception as exc:
                delay = backoff.next_delay()
                if is_connection_error(exc):
                    logger.warning("maintenance failed (%s); retrying in %.1fs",
                                   describe(exc), delay)
                else:
                    logger.exception("maintenance failed; retrying in %.1fs", delay)
                term.wait(delay)
                self._now.set()

    def _cutoff(self) -> float:
        return time.time() - self._config.retention_days * 86400

    def _partitions(self) -> None:
        config = self._config
        try:
            self._retention.ensure_partitions(days_ahead=config.partitions_ahead_days,
                                              partition_days=config.partition_days)
        except psycopg.errors.LockNotAvailable as exc:
            logger.warning("partitions not created ahead now (%s); next pass", exc)
        if config.retention_days <= 0:
            return
        archive = config.retention_mode == "archive"
        report = self._retention.retire_partitions(cutoff_epoch=self._cutoff(), archive=archive)
        if report.retired:
            self._metrics.purged.inc(report.rows_estimate)
            logger.info("retention: %s %d partitions older than %g days (about %d tasks): %s",
                        "archived" if archive else "dropped", len(report.retired),
                        config.retention_days, report.rows_estimate,
                        ", ".join(r.name for r in report.retired))

    def _move_slice(self, term: threading.Event) -> None:
        """Mover batches for about ``MOVE_SLICE_SECONDS``."""
        config = self._config
        drop_before = None
        if config.retention_days > 0 and config.retention_mode == "delete":
            drop_before = utc_day(self._cutoff())
        until = time.monotonic() + MOVE_SLICE_SECONDS
        while not term.is_set() and time.monotonic() < until:
            try:
                report = self._retention.mover.move_batch(
                    batch_size=config.retention_batch_size,
                    partition_days=config.partition_days, drop_before=drop_before)
            except psycopg.errors.LockNotAvailable as exc:
                logger.warning("partition migration: lock not granted (%s); next slice", exc)
                return
            if report.deleted:
                self._metrics.purged.inc(report.deleted)
            if report.moved or report.deleted:
                logger.debug("partition migration: %s", report)
            if report.finished:
                self.moving = False
                return
            term.wait(MOVE_PAUSE_SECONDS)
