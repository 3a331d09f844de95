"""The sync worker end to end: real Redis, PostgreSQL, Celery worker processes,
and the sync worker as a subprocess (``python -m sync_worker``) or in-process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from flower_ops.demo.embedded import EmbeddedRedis, free_port
from sync_worker.runner import SyncWorker
from testing.apps.client import client_app
from testing.executions import statuses, wait_all
from testing.inprocess import start_in_process
from testing.paths import REPO_ROOT
from testing.processes import CeleryWorker, SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.tcp_proxy import TcpProxy
from testing.waiting import wait_for


@pytest.fixture
def in_process(redis_url: str, database_url: str) -> Iterator[SyncWorker]:
    worker = start_in_process(redis_url, database_url)
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(redis_url: str) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(redis_url, concurrency=2).start()
    worker.wait_ready(client_app(redis_url))
    yield worker
    worker.stop()


def test_full_lifecycles_land_as_rows_with_status_and_timestamps(
        redis_url: str, database_url: str, in_process: SyncWorker,
        celery_worker: CeleryWorker) -> None:
    app = client_app(redis_url)
    ok = app.send_task("automation.add", args=(2, 3))
    bad = app.send_task("automation.fail", args=("broken",))
    flaky = app.send_task("automation.flaky", kwargs={"succeed_on": 2})
    assert ok.get(timeout=20) == 5 and flaky.get(timeout=20) == 1
    with pytest.raises(Exception):
        bad.get(timeout=20)
    wait_all(database_url, [ok.id, flaky.id], "success", timeout_seconds=20)
    wait_all(database_url, [bad.id], "failure", timeout_seconds=20)
    with psycopg.connect(database_url) as conn:
        r = conn.execute("SELECT task_name, args, result, worker, queue, sent_at, received_at, "
                         "started_at, succeeded_at, runtime FROM automation.job_executions "
                         "WHERE execution_id = %s", (ok.id,)).fetchone()
        assert r is not None
        assert r[:5] == ("automation.add", [2, 3], 5, celery_worker.hostname, "celery")
        # the client stamps task-sent after publishing: a fast worker's received
        # can read a little earlier, never much
        assert abs((r[6] - r[5]).total_seconds()) < 1.0
        assert r[6] <= r[7] <= r[8] and r[9] > 0
        err, tb = conn.execute("SELECT error, traceback FROM automation.job_executions "
                               "WHERE execution_id = %s", (bad.id,)).fetchone()  # type: ignore[misc]
        assert err == "ValueError('broken')" and "ValueError: broken" in tb
        retries, states = conn.execute(
            "SELECT j.retries, array_agg(h.state ORDER BY h.occurred_at) FROM "
            "automation.job_executions j JOIN automation.job_execution_history h USING "
            "(execution_id) WHERE execution_id = %s GROUP BY j.retries",
            (flaky.id,)).fetchone()  # type: ignore[misc]
    assert retries == 1 and "RETRY" in states and states[-1] == "SUCCESS"


def test_kill_9_during_burst_then_restart_converges_every_row(
        redis_url: str, database_url: str) -> None:
    app = client_app(redis_url)
    sync = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                             env=FAST_SYNC_WORKER).start().wait_listening()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        with app.producer_or_acquire() as producer:
            results = [app.send_task("automation.add", args=(i, i), producer=producer)
                       for i in range(2000)]
        ids = [r.id for r in results]
        wait_for(lambda: len(statuses(database_url)) >= 500, timeout_seconds=30,
                 message="first rows")
        sync.kill()
        time.sleep(2)   # tasks keep finishing while nobody listens
        sync = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                                 env=FAST_SYNC_WORKER).start()
        wait_all(database_url, ids, "success", timeout_seconds=90)
    finally:
        sync.stop()
        worker.stop()


def test_sigterm_flushes_and_exits_0(redis_url: str, database_url: str) -> None:
    metrics_port = free_port()
    # no flush for 30 s, and no discovery pass that could write the queued
    # tasks' rows: only the flush at exit can
    slow_flush = {**FAST_SYNC_WORKER, "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "30",
                  "FLOWER_OPS_SYNC_BATCH_SIZE": "100000",
                  "FLOWER_OPS_SYNC_DISCOVER_QUEUED_MAX": "0",
                  "FLOWER_OPS_SYNC_METRICS_PORT": str(metrics_port)}
    sync = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                             env=slow_flush).start().wait_listening()
    app = client_app(redis_url)
    ids = [app.send_task("automation.add", args=(1, 1)).id for _ in range(20)]

    def buffered() -> float:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("flower_ops_sync_buffered_events "))

    # received and buffered, not flushed (30 s interval)
    try:
        wait_for(lambda: buffered() >= len(ids), timeout_seconds=30,
                 message="the 20 task-sent events buffered")
        assert statuses(database_url, ids) == {}
        assert sync.stop() == 0
        assert statuses(database_url, ids) == dict.fromkeys(ids, "pending")
    finally:
        sync.kill()


def test_missing_database_url_stops_with_one_message_naming_it(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "sync_worker"],
                          env={**env, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, check=False)
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "Traceback" not in done.stderr


def test_task_whose_worker_died_mid_run_is_marked_lost(
        redis_url: str, database_url: str, tmp_path: Path) -> None:
    app = client_app(redis_url)
    # the sync worker first: if it cannot start, no Celery worker is left behind
    sync = start_in_process(redis_url, database_url, FLOWER_OPS_SYNC_WORKER_LOST_SECONDS="3")
    worker = CeleryWorker(redis_url, concurrency=1).start()
    try:
        worker.wait_ready(app)
        running = app.send_task("automation.sleep", args=(60,))
        wait_all(database_url, [running.id], "started", timeout_seconds=20)
        worker.kill()
        wait_all(database_url, [running.id], "failure", timeout_seconds=30)
        with psycopg.connect(database_url) as conn:
            error, lost = conn.execute("SELECT error, worker_lost FROM automation.job_executions "
                                       "WHERE execution_id = %s", (running.id,)).fetchone()  # type: ignore[misc]
        assert error.startswith("WorkerLostError(") and lost is True
    finally:
        sync.stop()
        worker.kill()


def test_redis_restart_mid_run_loses_no_final_state(database_url: str) -> None:
    server = EmbeddedRedis()
    server.start()
    url = server.url(0)
    app = client_app(url)
    sync = start_in_process(url, database_url)
    worker = CeleryWorker(url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        first = [app.send_task("automation.add", args=(i, 1)) for i in range(50)]
        wait_all(database_url, [r.id for r in first], "success", timeout_seconds=30)
        server.restart()
        wait_for(lambda: sync.metrics.reconnects.labels("broker")._value.get() >= 1,
                 timeout_seconds=30, message="sync worker reconnected to Redis")
        wait_for(lambda: sync.listening, timeout_seconds=30, message="listening again")

        def worker_back() -> bool:
            try:   # a fresh client: the old one's pooled connections died with the server
                return bool(client_app(url).control.ping(destination=[worker.hostname],
                                                          timeout=0.5))
            except Exception:  # noqa: BLE001 - not up yet
                return False
        wait_for(worker_back, timeout_seconds=60, message="celery worker back")
        app = client_app(url)
        second = [app.send_task("automation.add", args=(i, 2)) for i in range(50)]
        wait_all(database_url, [r.id for r in second], "success", timeout_seconds=60)
    finally:
        sync.stop()
        worker.stop()
        server.stop()
        server.cleanup()


def test_database_connection_cut_mid_batch_converges(
        redis_url: str, database_url: str, pg_service) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import urlsplit

    target = urlsplit(database_url)
    proxy = TcpProxy(target_host=target.hostname or "127.0.0.1",
                     target_port=target.port or 5432).start()
    app = client_app(redis_url)
    sync = start_in_process(redis_url, proxy.url(database_url),
                            FLOWER_OPS_SYNC_BATCH_SIZE="50")
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        with app.producer_or_acquire() as producer:
            ids = [app.send_task("automation.add", args=(i, i), producer=producer).id
                   for i in range(600)]
        for _ in range(3):       # cut repeatedly while batches are in flight
            time.sleep(0.4)
            proxy.refuse(True)
            proxy.cut()
            time.sleep(0.8)
            proxy.refuse(False)
        wait_all(database_url, ids, "success", timeout_seconds=60)
        assert sync.metrics.reconnects.labels("database")._value.get() >= 1
    finally:
        sync.stop()
        worker.stop()
        proxy.close()


def test_two_replicas_one_active_standby_takes_over_when_it_dies(
        redis_url: str, database_url: str) -> None:
    app = client_app(redis_url)
    first = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                              env=FAST_SYNC_WORKER).start().wait_listening()
    second = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                               env=FAST_SYNC_WORKER).start()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        wait_for(lambda: "standby" in second.output(), timeout_seconds=20,
                 message="second replica on standby")
        assert "listening to Celery events" not in second.output()
        before = [app.send_task("automation.add", args=(i, 0)).id for i in range(20)]
        wait_all(database_url, before, "success", timeout_seconds=20)
        os.killpg(first.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        second.wait_listening(timeout_seconds=15)
        takeover = time.monotonic() - killed_at
        assert takeover < 10, f"standby took {takeover:.1f}s to take over"
        after = [app.send_task("automation.add", args=(i, 1)).id for i in range(20)]
        wait_all(database_url, after, "success", timeout_seconds=20)
    finally:
        first.kill()
        assert second.stop() == 0
        worker.stop()
