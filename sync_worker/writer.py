"""Buffer -> PostgreSQL: the writer thread of a leadership term.

It waits for a batch (``batch_size`` events, or the oldest one
``flush_interval_seconds`` old), folds it into one delta per task and merges
it (``PgExecutionStore.apply``). A batch the database does not take is
retried with capped, jittered backoff: the same batch, since a merge is
idempotent whether or not a cut commit landed. When the term ends mid-retry
the batch goes back to the buffer for the next term; on exit the worker
``flush``es what is left. Only after a batch is committed are its stream
entries acknowledged (``on_committed``): a replica that dies before leaves
them pending, for another replica to claim.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from flower_ops.core.errors import Unavailable
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore
from sync_worker.backoff import describe
from sync_worker.buffer import EventBuffer
from sync_worker.config import SyncWorkerConfig
from sync_worker.metrics import SyncMetrics

logger = logging.getLogger(__name__)


class BatchWriter:
    def __init__(self, config: SyncWorkerConfig, *, buffer: EventBuffer,
                 store: PgExecutionStore, metrics: SyncMetrics,
                 on_committed: Callable[[list[Any]], None] | None = None) -> None:
        self._config = config
        self.on_committed = on_committed
        self._buffer = buffer
        self._store = store
        self._metrics = metrics
        self._lost_seen = 0
        # set while batches commit (or none was tried yet); cleared while the
        # database refuses them, so the stream consumer takes no new entries
        # that other replicas could commit meanwhile
        self.committing = threading.Event()
        self.committing.set()
        # read at each scrape: between commits too (a long flush interval)
        metrics.buffered.set_function(lambda: len(buffer))

    def run(self, term: threading.Event) -> None:
        """Commit batches until ``term`` is set (wake the buffer to notice)."""
        config = self._config
        backoff = config.backoff()
        while not term.is_set():
            self._buffer.wait_for_batch(batch_size=config.batch_size,
                                        flush_interval_seconds=config.flush_interval_seconds,
                                        stop=term)
            if term.is_set():
                break
            batch, acks = self._buffer.take(config.batch_size)
            while batch and not term.is_set():
                if self.commit(batch, acks):
                    backoff.reset()
                    self.committing.set()
                    break
                self.committing.clear()
                delay = backoff.next_delay()
                logger.warning("database unavailable; retrying the batch of %d events in "
                               "%.1fs", len(batch), delay)
                term.wait(delay)
            else:
                if batch:  # stepping down mid-retry: keep the batch for the next term
                    self._buffer.requeue(batch, acks)

    def commit(self, batch: list[Transition], acks: list[Any] | None = None) -> bool:
        """Merge one batch; False (logged, counted) when the database is away."""
        started = time.monotonic()
        try:
            changed = self._store.apply(fold(batch).values(), batch)
        except Unavailable as exc:
            logger.warning("batch not committed: %s", describe(exc))
            self._metrics.reconnects.labels("database").inc()
            return False
        except psycopg.Error as exc:
            # e.g. a deadlock with another replica's merge: PostgreSQL rolled the
            # batch back; the same batch is retried (a merge is idempotent)
            logger.warning("batch not committed (%s: %s); retrying it",
                           type(exc).__name__, str(exc)[:300])
            return False
        finally:
            self._count_replaced_connections()
        if acks and self.on_committed is not None:
            self.on_committed(acks)
        metrics = self._metrics
        metrics.events.inc(len(batch))
        metrics.batch_size.observe(len(batch))
        metrics.batch_seconds.observe(time.monotonic() - started)
        metrics.rows_changed.inc(changed)
        metrics.lag.set(max(0.0, time.time() - min(t.timestamp for t in batch)))
        return True

    def _count_replaced_connections(self) -> None:
        lost = self._store.database.connections_lost()
        if lost > self._lost_seen:
            logger.info("database: %d lost connection(s) replaced by the pool",
                        lost - self._lost_seen)
            self._metrics.reconnects.labels("database").inc(lost - self._lost_seen)
            self._lost_seen = lost

    def flush(self, *, timeout_seconds: float = 10.0) -> None:
        """Commit everything buffered, retrying for up to ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        backoff = self._config.backoff()
        while len(self._buffer) and time.monotonic() < deadline:
            batch, acks = self._buffer.take(self._config.batch_size)
            if not self.commit(batch, acks):
                self._buffer.requeue(batch, acks)
                time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
        if len(self._buffer):
            logger.warning("exiting with %d events not committed; stream entries stay "
                           "pending for another replica, the rest is reconciled from the "
                           "result backend", len(self._buffer))
