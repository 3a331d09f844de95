"""The sync worker: events in, batches out; every replica writes, one leads.

Every replica, all the time: the stream consumer (``stream.py``) reads the
capture stream of instrumented apps through the consumer group, the writer
(``writer.py``) commits the buffer (``buffer.py``) in batches and
acknowledges stream entries after their commit. Replicas share the stream's
entries; one that dies leaves its unacknowledged entries to be claimed.

``SyncWorker.run`` is the leadership loop, on the main thread: it tries for
the leader lock (``leader.py``) every ``leader_poll_seconds``; the replica
that gets it leads a *term* of the once-only duties, one thread each: the
pub/sub listener (``receiver.py``: worker heartbeats for liveness, and the
task events of apps that are not instrumented), maintenance (reconciliation
and retention), discovery (``discovery_loop.py``) and the stream's trimming
(``stream_trim.py``). When the lock is lost or ``stop()`` is called the term
ends and its threads are joined. On exit the stream consumer stops, and the
buffer is flushed (and its entries acknowledged).

All of PostgreSQL goes through one pool (``flower_ops.db.batch.batch_database``);
a database that cannot be reached is retried with capped, jittered backoff
by whichever loop met it.
"""
from __future__ import annotations

import functools
import logging
import threading

import psycopg
from celery import Celery

from flower_ops.core.errors import Unavailable
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.retention import Retention
from sync_worker.amqp_queue import QueueConsumer, is_amqp
from sync_worker.backoff import describe
from sync_worker.buffer import EventBuffer
from sync_worker.celery_app import build_celery_app, tasks_known_by_workers
from sync_worker.config import SyncWorkerConfig
from sync_worker.discovery_loop import DiscoveryLoop
from sync_worker.leader import LeaderLock
from sync_worker.liveness import WorkerLiveness
from sync_worker.maintenance import Maintenance
from sync_worker.metrics import SyncMetrics
from sync_worker.receiver import EventConsumer
from sync_worker.reconcile import BackendReader, Reconciler
from sync_worker.stream import StreamConsumer
from sync_worker.stream_trim import StreamJanitor
from sync_worker.writer import BatchWriter

logger = logging.getLogger(__name__)

# How long a term's threads get to finish when it ends
_JOIN_SECONDS = 15.0


class SyncWorker:
    def __init__(self, config: SyncWorkerConfig, *, app: Celery | None = None,
                 metrics: SyncMetrics | None = None) -> None:
        self.config = config
        self.app = app or build_celery_app(config)
        self.metrics = metrics or SyncMetrics()
        self.liveness = WorkerLiveness()
        self.database = batch_database(config.database_url)
        self.store = PgExecutionStore(self.database)
        self.buffer = EventBuffer(max_events=config.max_buffered_events, on_drop=self._on_drop)
        self.reconciler = Reconciler(
            store=self.store, backend_reader=lambda: BackendReader(self.app.backend),
            liveness=self.liveness, batch_size=config.reconcile_batch_size,
            settle_seconds=config.reconcile_settle_seconds,
            worker_lost_seconds=config.worker_lost_seconds,
            on_batch=self.metrics.reconciled.inc,
            tasks_known_by_workers=functools.partial(
                tasks_known_by_workers, self.app,
                timeout_seconds=config.worker_query_timeout_seconds))
        self.is_leader = threading.Event()
        self._writer = BatchWriter(config, buffer=self.buffer, store=self.store,
                                   metrics=self.metrics)
        self._maintenance = Maintenance(config, reconciler=self.reconciler,
                                        retention=Retention(self.database),
                                        metrics=self.metrics)
        self._discovery = DiscoveryLoop(config, app=self.app, store=self.store,
                                        metrics=self.metrics)
        self.stream: StreamConsumer | QueueConsumer | None = None
        self._janitor: StreamJanitor | None = None
        # which task events the leader's pub/sub listener leaves to the durable path
        self._skip_task_events = "none"
        if config.capture_mode != "events" and is_amqp(self.app):
            self.stream = QueueConsumer(config, app=self.app, buffer=self.buffer,
                                        metrics=self.metrics)
            self._skip_task_events = "all"        # the queue holds every task event
        elif config.capture_mode != "events":
            self.stream = StreamConsumer(config, app=self.app, buffer=self.buffer,
                                         metrics=self.metrics,
                                         committing=self._writer.committing)
            self._janitor = StreamJanitor(config, consumer=self.stream, metrics=self.metrics)
            self._skip_task_events = "all" if config.capture_mode == "stream" else "captured"
        if self.stream is not None:
            self._writer.on_committed = self.stream.ack
        self._stop = threading.Event()
        self._term = threading.Event()        # the current leadership term ended
        self._consumer: EventConsumer | None = None

    @property
    def listening(self) -> bool:
        """True while this replica leads and is subscribed to the events."""
        consumer = self._consumer
        return consumer is not None and consumer.connected.is_set()

    @property
    def reconcile_passes(self) -> int:
        return self._maintenance.passes

    @property
    def discovery_passes(self) -> int:
        return self._discovery.passes

    def _on_drop(self) -> None:
        self.metrics.dropped.inc()
        self._gap()

    def _gap(self) -> None:
        """Events may have been missed (start, reconnect, drop): repair rows and
        look for tasks that have none."""
        self._maintenance.request()
        self._discovery.request()

    def stop(self) -> None:
        """Ask the worker to flush and return from ``run()`` (signal-safe)."""
        self._stop.set()
        self._end_term()

    def _end_term(self) -> None:
        self._term.set()
        self._gap()                 # wakes the maintenance and discovery threads
        self.buffer.wake()          # ... and the writer

    # -- leadership ----------------------------------------------------------
    def run(self) -> int:
        self.metrics.serve(port=self.config.metrics_port, address=self.config.metrics_address)
        lock = LeaderLock(database=self.database, key=self.config.leader_lock_key)
        backoff = self.config.backoff()
        standby_logged = False
        always = [threading.Thread(target=self._writer.run, args=(self._stop,),
                                   name="sync-writer", daemon=True)]
        if self.stream is not None:
            always.append(threading.Thread(target=self.stream.run, name="sync-stream",
                                           daemon=True))
        for thread in always:
            thread.start()
        try:
            while not self._stop.is_set():
                try:
                    acquired = lock.try_acquire()
                except (Unavailable, psycopg.Error) as exc:
                    delay = backoff.next_delay()
                    logger.warning("database unavailable for the leader lock (%s); "
                                   "retrying in %.1fs", describe(exc), delay)
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
            self._stop.set()
            if self.stream is not None:
                self.stream.stop()
            self.buffer.wake()
            for thread in always:
                thread.join(_JOIN_SECONDS)
            self._writer.flush()
            if self.stream is not None:
                self.stream.close()
            # the pool first: a closed pool closes the lock's connection quietly
            # when it comes back (an open one would warn about a closed connection)
            self.database.close()
            lock.release()
        logger.info("sync worker stopped")
        return 0

    def _lead(self, lock: LeaderLock) -> None:
        # The lock's connection came from the opened pool, so the schema is
        # migrated: once we listen, rows can be written and read.
        self._term.clear()
        self.is_leader.set()
        self.metrics.set_leader(True)
        self._gap()                 # on start: close whatever gap we had
        consumer = EventConsumer(app=self.app, sink=self.buffer.put, liveness=self.liveness,
                                 on_connected=self._gap,
                                 backoff=self.config.backoff(),
                                 on_reconnect=self.metrics.reconnects.labels("broker").inc,
                                 sink_many=self.buffer.put_many,
                                 fast_redis=self.config.fast_redis_events,
                                 skip_task_events=self._skip_task_events,
                                 on_skipped=self.metrics.captured_skipped.inc,
                                 # quiet proves the connection often enough to tell
                                 # a dead worker from our own stalled stream
                                 idle_ping_seconds=min(
                                     15.0, max(0.5, self.config.worker_lost_seconds / 4)))
        self._consumer = consumer
        threads = [threading.Thread(target=consumer.run, name="sync-events", daemon=True),
                   threading.Thread(target=self._maintenance.run, args=(self._term,),
                                    name="sync-maintenance", daemon=True)]
        if self._janitor is not None:
            threads.append(threading.Thread(target=self._janitor.run, args=(self._term,),
                                            name="sync-stream-trim", daemon=True))
        if self.config.discovery_interval_seconds > 0:
            threads.append(threading.Thread(target=self._discovery.run, args=(self._term,),
                                            name="sync-discovery", daemon=True))
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
                thread.join(_JOIN_SECONDS)
            self.is_leader.clear()
            self.metrics.set_leader(False)
