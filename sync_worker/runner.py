"""The sync worker's loop: leadership, events -> batches -> PostgreSQL,
reconciliation and retention, each network loop with capped backoff.

Threads while leading: the event consumer (receiver.py) appends transitions
to an ``EventBuffer``; the writer folds and commits them in batches; the
maintenance thread reconciles (on start, after every broker reconnect, and
every ``reconcile_interval_seconds``) and applies retention. The main thread
holds the leader lock and watches it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg
from celery import Celery

from sync_worker.backoff import Backoff
from sync_worker.config import SyncWorkerConfig
from sync_worker.discovery import QueueDiscovery, ResultDiscovery, queue_discovery_for
from sync_worker.metrics import SyncMetrics
from sync_worker.receiver import EventConsumer, WorkerLiveness
from sync_worker.reconcile import BackendReader, Reconciler
from flower_ops.db.batch import PgExecutionStore, StoreUnavailable
from flower_ops.core.transitions import Transition, fold

logger = logging.getLogger(__name__)


class EventBuffer:
    """Transitions received and not yet committed (thread-safe)."""

    def __init__(self, *, max_events: int, on_drop: Callable[[], None]) -> None:
        self._items: list[Transition] = []
        self._cond = threading.Condition()
        self._max = max_events
        self._on_drop = on_drop
        self._oldest_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, transition: Transition) -> None:
        with self._cond:
            if len(self._items) >= self._max:
                # Dropping is what Redis would do to a slow subscriber anyway;
                # the caller schedules a reconciliation to close the gap.
                self._on_drop()
                return
            if not self._items:
                self._oldest_at = time.monotonic()
            self._items.append(transition)
            if len(self._items) == 1 or len(self._items) % 500 == 0:
                self._cond.notify()

    def put_many(self, transitions: list[Transition]) -> None:
        with self._cond:
            room = self._max - len(self._items)
            if room < len(transitions):
                # Dropping is what Redis would do to a slow subscriber anyway;
                # the caller schedules a reconciliation to close the gap.
                self._on_drop()
                transitions = transitions[:max(0, room)]
                if not transitions:
                    return
            before = len(self._items)
            if not before:
                self._oldest_at = time.monotonic()
            self._items.extend(transitions)
            if before == 0 or before // 500 != len(self._items) // 500:
                self._cond.notify()

    def wait_for_batch(self, *, batch_size: int, flush_interval_seconds: float,
                       stop: threading.Event) -> None:
        with self._cond:
            while not stop.is_set():
                if len(self._items) >= batch_size:
                    return
                if self._items:
                    remaining = self._oldest_at + flush_interval_seconds - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
                else:
                    self._cond.wait(0.5)

    def take(self, max_items: int) -> list[Transition]:
        with self._cond:
            batch, self._items = self._items[:max_items], self._items[max_items:]
            if self._items:
                self._oldest_at = time.monotonic()
            return batch

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class LeaderLock:
    """A session-level advisory lock on a dedicated connection: whoever holds
    it is the active replica; if it dies, PostgreSQL releases the lock."""

    def __init__(self, *, database_url: str, key: int) -> None:
        self._url = database_url
        self._key = key
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                         application_name="sync-worker-leader",
                                         keepalives=1, keepalives_idle=5,
                                         keepalives_interval=2, keepalives_count=2)
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return bool(row and row[0])

    def still_held(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # closing the session releases the lock
            except psycopg.Error:
                pass


def build_celery_app(config: SyncWorkerConfig) -> Celery:
    if config.app:
        from celery.app.utils import find_app

        app = find_app(config.app)
        if not isinstance(app, Celery):
            raise RuntimeError(f"--app {config.app} is not a Celery app")
        return app
    return Celery("flower-ops-sync", broker=config.redis_url, backend=config.backend_url,
                  set_as_current=False)


class SyncWorker:
    def __init__(self, config: SyncWorkerConfig, *, app: Celery | None = None,
                 metrics: SyncMetrics | None = None) -> None:
        self.config = config
        self.app = app or build_celery_app(config)
        self.metrics = metrics or SyncMetrics()
        self.liveness = WorkerLiveness()
        self.store = PgExecutionStore(database_url=config.database_url)
        self.buffer = EventBuffer(max_events=config.max_buffered_events,
                                  on_drop=self._on_drop)
        self._stop = threading.Event()
        self._term = threading.Event()        # leadership term ended
        self._reconcile_now = threading.Event()
        self._discover_now = threading.Event()
        self.discovery_passes = 0
        self.reconciler = Reconciler(
            store=self.store, backend_reader=lambda: BackendReader(self.app.backend),
            liveness=self.liveness, batch_size=config.reconcile_batch_size,
            settle_seconds=config.reconcile_settle_seconds,
            worker_lost_seconds=config.worker_lost_seconds,
            on_batch=self.metrics.reconciled.inc,
            tasks_known_by_workers=self._tasks_known_by_workers)
        self.is_leader = threading.Event()
        self.reconcile_passes = 0
        self._consumer: EventConsumer | None = None

    @property
    def listening(self) -> bool:
        """True while this replica leads and is subscribed to the events."""
        consumer = self._consumer
        return consumer is not None and consumer.connected.is_set()

    def _tasks_known_by_workers(self, hostnames: Sequence[str], task_ids: Sequence[str]
                                ) -> dict[str, set[str]]:
        """Which of ``task_ids`` each of ``hostnames`` still has (running,
        reserved or scheduled), for the workers that answered in time."""
        with self.app.connection_for_write() as conn:
            replies = self.app.control.inspect(
                destination=list(hostnames), connection=conn,
                timeout=self.config.worker_query_timeout_seconds).query_task(*task_ids)
        return {host: set(answer or ()) for host, answer in (replies or {}).items()}

    def _backoff(self) -> Backoff:
        return Backoff(initial_seconds=self.config.backoff_initial_seconds,
                       max_seconds=self.config.backoff_max_seconds)

    def _on_drop(self) -> None:
        self.metrics.dropped.inc()
        self._gap()

    def _gap(self) -> None:
        """Events may have been missed (start, reconnect, drop): repair rows and
        look for tasks that have none."""
        self._reconcile_now.set()
        self._discover_now.set()

    def stop(self) -> None:
        """Ask the worker to flush and return from ``run()`` (signal-safe)."""
        self._stop.set()
        self._end_term()

    def _end_term(self) -> None:
        self._term.set()
        self._reconcile_now.set()   # wakes the maintenance thread
        self._discover_now.set()    # ... and the discovery thread
        self.buffer.wake()

    # -- leadership ----------------------------------------------------------
    def run(self) -> int:
        self.metrics.serve(port=self.config.metrics_port, address=self.config.metrics_address)
        lock = LeaderLock(database_url=self.config.database_url,
                          key=self.config.leader_lock_key)
        backoff = self._backoff()
        standby_logged = False
        try:
            while not self._stop.is_set():
                try:
                    acquired = lock.try_acquire()
                except psycopg.Error as exc:
                    delay = backoff.next_delay()
                    logger.warning("database unavailable for the leader lock (%s); "
                                   "retrying in %.1fs", exc, delay)
                    self.metrics.reconnects.labels("database").inc()
                    lock.release()
                    self._stop.wait(delay)
                    continue
                backoff.reset()
                if not acquired:
                    if not standby_logged:
                        logger.info("standby: another sync worker holds the leader lock")
                        standby_logged = True
                    self._stop.wait(self.config.leader_poll_seconds)
                    continue
                standby_logged = False
                logger.info("leader: this sync worker is now active")
                self._lead(lock)
        finally:
            self._flush_on_exit()
            lock.release()
            self.store.close()
        logger.info("sync worker stopped")
        return 0

    def _lead(self, lock: LeaderLock) -> None:
        self._term.clear()
        self.is_leader.set()
        self.metrics.leader.set(1)
        self._gap()                 # on start: close whatever gap we had
        try:   # schema first, so "listening" means rows can be read
            self.store.connect()
        except StoreUnavailable as exc:
            logger.warning("database not ready (%s); the writer retries with backoff", exc)
        consumer = EventConsumer(app=self.app, sink=self.buffer.put, liveness=self.liveness,
                                 on_connected=self._gap,
                                 backoff=self._backoff(),
                                 on_reconnect=self.metrics.reconnects.labels("broker").inc,
                                 sink_many=self.buffer.put_many,
                                 fast_redis=self.config.fast_redis_events,
                                 # quiet proves the connection often enough to tell
                                 # a dead worker from our own stalled stream
                                 idle_ping_seconds=min(
                                     15.0, max(0.5, self.config.worker_lost_seconds / 4)))
        self._consumer = consumer
        threads = [threading.Thread(target=consumer.run, name="sync-events", daemon=True),
                   threading.Thread(target=self._write_loop, name="sync-writer", daemon=True),
                   threading.Thread(target=self._maintenance_loop, name="sync-maintenance",
                                    daemon=True)]
        if self.config.discovery_interval_seconds > 0:
            threads.append(threading.Thread(target=self._discovery_loop, name="sync-discovery",
                                            daemon=True))
        for thread in threads:
            thread.start()
        try:
            while not self._term.is_set():
                self._term.wait(self.config.leader_poll_seconds)
                if not self._term.is_set() and not lock.still_held():
                    logger.warning("lost the leader lock (database connection gone); "
                                   "stepping down")
                    break
        finally:
            self._end_term()
            consumer.stop()
            for thread in threads:
                thread.join(15)
            self.is_leader.clear()
            self.metrics.leader.set(0)

    # -- writer ----------------------------------------------------------------
    def _write_loop(self) -> None:
        backoff = self._backoff()
        while not self._term.is_set():
            self.buffer.wait_for_batch(batch_size=self.config.batch_size,
                                       flush_interval_seconds=self.config.flush_interval_seconds,
                                       stop=self._term)
            if self._term.is_set():
                break
            batch = self.buffer.take(self.config.batch_size)
            while batch and not self._term.is_set():
                if self._commit(batch):
                    backoff.reset()
                    break
                delay = backoff.next_delay()
                logger.warning("database unavailable; retrying the batch of %d events in "
                               "%.1fs", len(batch), delay)
                self._term.wait(delay)
            else:
                if batch:  # stepping down mid-retry: keep the batch for the next term
                    self._requeue(batch)

    def _requeue(self, batch: list[Transition]) -> None:
        with self.buffer._cond:
            self.buffer._items[:0] = batch

    def _commit(self, batch: list[Transition]) -> bool:
        started = time.monotonic()
        try:
            changed = self.store.apply(fold(batch).values(), batch)
        except StoreUnavailable as exc:
            logger.warning("batch not committed: %s", exc)
            self.metrics.reconnects.labels("database").inc()
            return False
        now = time.time()
        self.metrics.events.inc(len(batch))
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        self.metrics.rows_changed.inc(changed)
        self.metrics.lag.set(max(0.0, now - min(t.timestamp for t in batch)))
        self.metrics.buffered.set(len(self.buffer))
        return True

    def _flush_on_exit(self, *, timeout_seconds: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        backoff = self._backoff()
        while len(self.buffer) and time.monotonic() < deadline:
            batch = self.buffer.take(self.config.batch_size)
            if not self._commit(batch):
                self._requeue(batch)
                time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
        if len(self.buffer):
            logger.warning("exiting with %d events not committed; the next start reconciles "
                           "them from the result backend", len(self.buffer))

    # -- reconciliation and retention -----------------------------------------
    def _maintenance_loop(self) -> None:
        backoff = self._backoff()
        next_retention = time.monotonic()
        while not self._term.is_set():
            self._reconcile_now.wait(self.config.reconcile_interval_seconds)
            if self._term.is_set():
                break
            self._reconcile_now.clear()
            try:
                report = self.reconciler.run_once(should_stop=self._term.is_set)
                self.reconcile_passes += 1
                self.metrics.reconcile_runs.inc()
                if report.checked:
                    logger.debug("reconcile pass: %s", report)
                if self.config.retention_days > 0 and time.monotonic() >= next_retention:
                    self._apply_retention()
                    next_retention = time.monotonic() + self.config.retention_interval_seconds
                backoff.reset()
            except Exception as exc:
                delay = backoff.next_delay()
                if isinstance(exc, (StoreUnavailable, ConnectionError, OSError)):
                    logger.warning("reconciliation failed (%s); retrying in %.1fs", exc, delay)
                else:
                    logger.exception("reconciliation failed; retrying in %.1fs", delay)
                self._term.wait(delay)
                self._reconcile_now.set()

    # -- discovery ---------------------------------------------------------------
    def _build_discovery(self) -> tuple[ResultDiscovery | None, QueueDiscovery | None]:
        config = self.config
        oldest = time.time() - config.retention_days * 86400 if config.retention_days else None
        backend = self.app.backend
        results = ResultDiscovery(backend=backend, store=self.store,
                                  max_keys=config.discovery_batch_size,
                                  settle_seconds=config.reconcile_settle_seconds,
                                  oldest_epoch=oldest) \
            if ResultDiscovery.supports(backend) else None
        queued = None
        if config.discover_queued_max:
            with self.app.connection_for_read() as conn:
                queued = queue_discovery_for(self.app, conn, store=self.store,
                                             max_messages_per_queue=config.discover_queued_max)
        if results is None and queued is None:
            logger.info("discovery: neither the result backend nor the broker is a plain "
                        "Redis; only reconciliation of existing rows runs")
        return results, queued

    def _discovery_loop(self) -> None:
        """Passes over the result backend and the queues, on every gap and every
        ``discovery_interval_seconds``, in bounded ticks."""
        backoff = self._backoff()
        built = False
        results: ResultDiscovery | None = None
        queued: QueueDiscovery | None = None
        next_pass = time.monotonic()
        while not self._term.is_set():
            self._discover_now.wait(max(0.0, next_pass - time.monotonic()))
            if self._term.is_set():
                break
            self._discover_now.clear()
            try:
                if not built:
                    results, queued = self._build_discovery()
                    built = True
                inserted = recent = scanned = 0
                if results is not None:
                    results.restart()
                    while not self._term.is_set():
                        tick = results.tick()
                        scanned += tick.scanned
                        inserted += tick.inserted
                        recent += tick.recent
                        self.metrics.discovered.labels("backend").inc(tick.inserted)
                        if tick.pass_done:
                            break
                        self._term.wait(self.config.discovery_pause_seconds)
                if queued is not None and not self._term.is_set():
                    tick = queued.run_pass(should_stop=self._term.is_set)
                    self.metrics.discovered.labels("queue").inc(tick.inserted)
                    inserted += tick.inserted
                self.discovery_passes += 1
                if inserted:
                    logger.info("discovery: %d rows created for tasks no event was seen for "
                                "(%d result keys scanned)", inserted, scanned)
                # tasks that finished a moment ago were left to their events; look again soon
                wait = self.config.reconcile_settle_seconds + 0.5 if recent else \
                    self.config.discovery_interval_seconds
                next_pass = time.monotonic() + wait
                backoff.reset()
            except Exception as exc:
                built = False
                delay = backoff.next_delay()
                if isinstance(exc, (StoreUnavailable, ConnectionError, OSError)) or \
                        type(exc).__name__ in ("ConnectionError", "TimeoutError"):
                    logger.warning("discovery failed (%s); retrying in %.1fs", exc, delay)
                else:
                    logger.exception("discovery failed; retrying in %.1fs", delay)
                next_pass = time.monotonic() + delay

    def _apply_retention(self) -> None:
        cutoff = time.time() - self.config.retention_days * 86400
        total = 0
        while not self._term.is_set():
            removed = self.store.purge_older_than(
                cutoff_epoch=cutoff, batch_size=self.config.retention_batch_size,
                archive=self.config.retention_mode == "archive")
            total += removed
            self.metrics.purged.inc(removed)
            if removed < self.config.retention_batch_size:
                break
            self._term.wait(0.05)  # small batches, room for the writer between them
        if total:
            logger.info("retention: %s %d rows older than %g days",
                        "archived" if self.config.retention_mode == "archive" else "deleted",
                        total, self.config.retention_days)
