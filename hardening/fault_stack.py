"""The pieces of the fault-injection suite (``hardening/faults.py``).

* ``PrivateServices`` — our own Redis (append-only file on, as a production
  broker has it, so a restart keeps queued messages and stored results) and
  PostgreSQL, so the suite may kill and restart them without touching the
  machine's servers.
* ``FaultStack`` — the real processes of one scenario: Celery workers, the
  monitor (``celery -A testing.apps.automation flower-ops``) and the sync worker
  (``python -m sync_worker``), built from ``testing.processes`` and connected
  directly or through ``testing.tcp_proxy.TcpProxy``. Unlike
  ``testing.stack.Stack`` it runs several workers, replaces processes mid-run
  and pings on fresh connections (a restarted Redis kills pooled ones).
* ``Burst`` — a thread publishing a paced mix of tasks (successes, failures,
  retries that end either way, slow ones).
* ``Truth`` and ``expectation`` — what the result backend says about each task
  and what its ``automation.job_executions`` row must therefore say.
"""
from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
import requests
from celery import Celery

from flower_ops import instrument
from flower_ops.demo.embedded import EmbeddedPostgres, EmbeddedRedis
from testing.processes import CeleryWorker, Monitor, SyncWorkerProcess
from testing.tcp_proxy import TcpProxy

logger = logging.getLogger("hardening.faults")

PROBE_QUEUE = "faults-probe"    # probes skip the burst's backlog
FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
STATE_TO_STATUS = {"PENDING": "pending", "RECEIVED": "received", "STARTED": "started",
                   "SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry",
                   "REVOKED": "cancelled"}


# -- servers -------------------------------------------------------------------
class PrivateServices:
    """A Redis and a PostgreSQL of our own, on loopback ports."""

    def __init__(self) -> None:
        self.redis = EmbeddedRedis(persistent=True)
        self.postgres = EmbeddedPostgres()

    def start(self) -> PrivateServices:
        self.redis.start()
        self.postgres.start(timeout_seconds=60)
        return self

    def close(self) -> None:
        for server in (self.redis, self.postgres):
            try:
                server.cleanup()
            except Exception:
                logger.exception("could not clean up the embedded %s", server.name)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.postgres.url(name)

    def drop_database(self, name: str) -> None:
        try:
            with psycopg.connect(self.postgres.url(), autocommit=True, connect_timeout=5) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error as exc:
            logger.warning("could not drop %s: %s", name, exc)


def harness_app(redis_url: str) -> Celery:
    """The suite's own client app: a producer as a user's app would be
    (instrumented), reading results straight from the private Redis."""
    app = Celery("faults-harness", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, broker_connection_timeout=2,
                    redis_socket_timeout=5, redis_socket_connect_timeout=2)
    instrument(app)
    return app


# -- the processes ---------------------------------------------------------------
class FaultStack:
    """Workers, monitor and sync worker of one scenario."""

    def __init__(self, services: PrivateServices, *, redis_db: int, database: str,
                 redis_via_proxy: bool, pg_via_proxy: bool, sync_env: Mapping[str, str],
                 workers: int = 2, concurrency: int = 2) -> None:
        self.services = services
        self.database = database
        self.direct_redis_url = services.redis.url(redis_db)
        self.direct_db_url = services.postgres.url(database)
        self.redis_proxy = TcpProxy(target_host=services.redis.host,
                                    target_port=services.redis.port).start() \
            if redis_via_proxy else None
        self.pg_proxy = TcpProxy(target_host=services.postgres.host,
                                 target_port=services.postgres.port).start() \
            if pg_via_proxy else None
        self.broker_url = self.redis_proxy.url(self.direct_redis_url) if self.redis_proxy \
            else self.direct_redis_url
        self.product_db_url = self.pg_proxy.url(self.direct_db_url) if self.pg_proxy \
            else self.direct_db_url
        self.sync_env = dict(sync_env)
        self.concurrency = concurrency
        self.app = harness_app(self.direct_redis_url)
        self.sync = self.new_sync()
        self.workers = [self.new_worker() for _ in range(workers)]
        self.monitor = self.new_monitor()
        self.retired: list[Any] = []      # killed processes, kept for their logs

    def new_sync(self) -> SyncWorkerProcess:
        return SyncWorkerProcess(redis_url=self.broker_url, database_url=self.product_db_url,
                                 env=self.sync_env)

    def new_worker(self, hostname: str | None = None) -> CeleryWorker:
        return CeleryWorker(self.broker_url, queues=("celery", PROBE_QUEUE),
                            concurrency=self.concurrency,
                            hostname=hostname or f"faults-{uuid.uuid4().hex[:6]}@faults")

    def new_monitor(self, port: int | None = None) -> Monitor:
        return Monitor(self.broker_url, port=port,
                       env={"DATABASE_URL": self.product_db_url,
                            "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "5",
                            "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "1"})

    def start(self, *, timeout_seconds: float = 90.0) -> FaultStack:
        self.sync.start()
        for worker in self.workers:
            worker.start()
        self.monitor.start()
        self.sync.wait_listening(timeout_seconds)
        for worker in self.workers:
            self.wait_worker(worker, timeout_seconds)
        self.monitor.wait_ready(timeout_seconds)
        return self

    def ping(self, hostnames: Sequence[str]) -> set[str]:
        """Which of ``hostnames`` answer a ping now (on a fresh connection:
        after a Redis restart pooled ones are dead)."""
        try:
            with self.app.connection_for_write() as conn:
                replies = self.app.control.ping(destination=list(hostnames), timeout=1.0,
                                                connection=conn)
        except Exception:  # noqa: BLE001 - the broker may be away: nobody answered
            return set()
        return {name for reply in replies for name in reply}

    def wait_worker(self, worker: CeleryWorker, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker {worker.hostname} exited:\n{worker.output()[-3000:]}")
            if worker.hostname in self.ping([worker.hostname]):
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {worker.hostname} did not answer a ping in "
                           f"{timeout_seconds:.0f}s:\n{worker.output()[-3000:]}")

    def active_anywhere(self) -> bool | None:
        """Does any worker run a task right now? None when nobody answered."""
        try:
            with self.app.connection_for_write() as conn:
                replies = self.app.control.inspect(
                    destination=[w.hostname for w in self.workers], timeout=1.5,
                    connection=conn).active()
        except Exception:  # noqa: BLE001 - the broker may be away
            return None
        if not replies:
            return None
        return any(tasks for tasks in replies.values())

    def queue_length(self) -> int | None:
        try:
            client = self.app.backend.client
            return int(client.llen("celery")) + int(client.llen(PROBE_QUEUE))
        except Exception:  # noqa: BLE001 - the broker may be away
            return None

    def close(self) -> None:
        for proc in [self.monitor, self.sync, *self.workers]:
            try:
                proc.stop(timeout_seconds=15)
            except Exception:  # noqa: BLE001 - keep closing the others
                proc.kill()
        for proxy in (self.redis_proxy, self.pg_proxy):
            if proxy is not None:
                proxy.close()

    def logs(self) -> dict[str, str]:
        procs = {"sync": self.sync, "monitor": self.monitor,
                 **{f"worker {w.hostname}": w for w in self.workers}}
        for index, proc in enumerate(self.retired):
            procs[f"retired {index} ({type(proc).__name__})"] = proc
        return {name: str(proc.log) for name, proc in procs.items()}


# -- the burst ---------------------------------------------------------------------
@dataclass(frozen=True)
class SentTask:
    task_id: str
    kind: str


# kind: (weight, task name)
MIX: dict[str, tuple[int, str]] = {
    "success": (50, "automation.add"),
    "failure": (15, "automation.fail"),
    "retry-success": (10, "automation.flaky"),   # one RETRY, then SUCCESS
    "retry-failure": (5, "automation.flaky"),    # RETRY twice, then FAILURE
    "slow": (20, "automation.sleep"),
}


def plan_burst(count: int, *, slow_max_seconds: float, seed: int = 7
               ) -> list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]:
    rng = random.Random(seed)
    kinds = list(MIX)
    weights = [MIX[k][0] for k in kinds]
    plan = []
    for index in range(count):
        kind = rng.choices(kinds, weights)[0]
        name = MIX[kind][1]
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}
        if kind == "success":
            args = (index, index)
        elif kind == "failure":
            args = (f"boom {index}",)
        elif kind == "retry-success":
            kwargs = {"succeed_on": 2}
        elif kind == "retry-failure":
            kwargs = {"succeed_on": 4}
        else:
            args = (round(rng.uniform(0.3, slow_max_seconds), 2),)
        plan.append((kind, name, args, kwargs))
    return plan


class Burst(threading.Thread):
    """Publishes the plan over ``seconds``; a failed publish is retried with
    the same task id until it goes through (Redis may be restarting)."""

    def __init__(self, app: Celery, plan: Sequence[tuple[str, str, tuple[Any, ...],
                                                      dict[str, Any]]], *,
                 seconds: float) -> None:
        super().__init__(name="faults-burst", daemon=True)
        self.app = app
        self.plan = list(plan)
        self.seconds = seconds
        self.sent: list[SentTask] = []
        self.halfway = threading.Event()
        self.publish_errors = 0
        self.stop_flag = threading.Event()
        self.finished_at: float | None = None

    def run(self) -> None:
        start = time.monotonic()
        total = len(self.plan)
        for index, (kind, name, args, kwargs) in enumerate(self.plan):
            due = start + self.seconds * index / max(1, total)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            task_id = str(uuid.uuid4())
            while not self.stop_flag.is_set():
                try:
                    self.app.send_task(name, args=args, kwargs=kwargs, task_id=task_id)
                    break
                except Exception as exc:  # noqa: BLE001 - the broker is away: try again
                    self.publish_errors += 1
                    logger.debug("publish failed (%s); retrying %s", exc, task_id)
                    time.sleep(0.3)
            else:
                return
            self.sent.append(SentTask(task_id, kind))
            if index + 1 >= total // 2:
                self.halfway.set()
        self.halfway.set()
        self.finished_at = time.monotonic()


# -- the truth -----------------------------------------------------------------------
class Truth:
    """Task metas from the result backend (what ``AsyncResult(id).state``
    reads), many per round trip."""

    def __init__(self, app: Celery) -> None:
        self.backend = app.backend

    def metas(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        backend = self.backend
        out: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(task_ids), 500):
            chunk = list(task_ids[start:start + 500])
            raws = backend.client.mget([backend.get_key_for_task(t) for t in chunk])
            for task_id, raw in zip(chunk, raws):
                out[task_id] = backend.decode_result(raw) if raw else None
        return out


def state_of(meta: dict[str, Any] | None) -> str:
    return str(meta.get("status")) if meta else "PENDING"


def done_epoch(meta: dict[str, Any] | None) -> float | None:
    value = meta.get("date_done") if meta else None
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class Expectation:
    """What a task's row must say, given the backend's settled truth."""

    statuses: frozenset[str]
    label: str                          # final | lost | stranded
    result: Any = field(default=None)
    check_result: bool = False
    error_type: str | None = None
    worker_lost: bool | None = None


def expectation(meta: dict[str, Any] | None) -> Expectation:
    """The row a task must have once everything has settled (no worker runs
    anything, the queue is empty, nothing changed for a while):

    * SUCCESS / FAILURE / REVOKED: ``success`` (same result) / ``failure``
      (same exception type) / ``cancelled``;
    * STARTED: whoever ran it is dead (nothing runs any more) and will never
      record an outcome: ``failure`` with ``worker_lost`` — the sync worker's
      WorkerLostError;
    * PENDING or RETRY: the message waits in Redis' unacked set for
      redelivery after the visibility timeout (the worker that had prefetched
      it was killed): still open, ``pending``/``received`` (``retry`` for a
      RETRY whose next attempt was not received yet), never final.
    """
    state = state_of(meta)
    if state == "SUCCESS":
        assert meta is not None
        return Expectation(frozenset({"success"}), "final", result=meta.get("result"),
                           check_result=True)
    if state == "FAILURE":
        assert meta is not None
        result = meta.get("result")
        error_type = result.get("exc_type") if isinstance(result, dict) else None
        return Expectation(frozenset({"failure"}), "final", error_type=error_type,
                           worker_lost=False)
    if state == "REVOKED":
        return Expectation(frozenset({"cancelled"}), "final")
    if state == "STARTED":
        return Expectation(frozenset({"failure"}), "lost", error_type="WorkerLostError",
                           worker_lost=True)
    if state == "RETRY":
        return Expectation(frozenset({"retry", "received"}), "stranded")
    return Expectation(frozenset({"pending", "received"}), "stranded")


@dataclass(frozen=True)
class Row:
    status: str
    worker_lost: bool
    result: Any
    error: str | None
    worker: str | None


def read_rows(database_url: str, task_ids: Sequence[str]) -> dict[str, Row]:
    with psycopg.connect(database_url, connect_timeout=3) as conn:
        cur = conn.execute("SELECT execution_id, status, worker_lost, result, error, worker "
                           "FROM automation.job_executions WHERE execution_id = ANY(%s)",
                           (list(task_ids),))
        return {r[0]: Row(r[1], bool(r[2]), r[3], r[4], r[5]) for r in cur.fetchall()}


def declared_lost(database_url: str, task_ids: Sequence[str]) -> set[str]:
    """Tasks reconciliation ever declared lost with their worker (the history
    keeps it even when a later event moved the row on)."""
    with psycopg.connect(database_url, connect_timeout=3) as conn:
        cur = conn.execute("SELECT DISTINCT execution_id FROM automation.job_execution_history "
                           "WHERE execution_id = ANY(%s) AND source = 'reconcile' "
                           "AND state = 'FAILURE' AND detail->>'reason' = 'worker_lost'",
                           (list(task_ids),))
        return {r[0] for r in cur.fetchall()}


def row_problem(expected: Expectation, row: Row | None) -> str | None:
    """Why ``row`` is wrong, or None."""
    if row is None:
        return "missing"
    if row.status not in expected.statuses:
        return f"status {row.status}, expected {'/'.join(sorted(expected.statuses))}"
    if expected.check_result and row.result != expected.result:
        return f"result {row.result!r}, expected {expected.result!r}"
    if expected.error_type and not (row.error or "").startswith(expected.error_type):
        return f"error {str(row.error)[:80]!r}, expected {expected.error_type}"
    if expected.worker_lost is not None and row.worker_lost != expected.worker_lost:
        return f"worker_lost {row.worker_lost}, expected {expected.worker_lost}"
    return None


# -- the monitor's API -----------------------------------------------------------------
class MonitorClient:
    """GETs against one monitor incarnation's API with a token it issued."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._token: str | None = None

    def get(self, path: str, **params: Any) -> requests.Response:
        if self._token is None:
            self._token = self.monitor.token()
        response = requests.get(f"{self.monitor.api}{path}", params=params, timeout=5,
                                headers={"Authorization": f"Bearer {self._token}"})
        if response.status_code == 401:
            self._token = None
        return response

    def try_get(self, path: str, **params: Any) -> requests.Response | None:
        try:
            return self.get(path, **params)
        except (requests.RequestException, ValueError, KeyError):
            return None
