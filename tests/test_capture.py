"""Lossless capture: with ``instrument(app)`` every task event is also written
to a Redis stream, so every transition reaches PostgreSQL even when no sync
worker runs while the tasks do (real Redis, PostgreSQL, Celery worker and
sync-worker processes)."""
from __future__ import annotations

import redis

from testing.apps import automation_app
from testing.processes import CeleryWorker, SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.streams import STREAM_KEY, wait_history_complete
from testing.waiting import wait_for

# Reconciliation and discovery can only repair final states: with them far
# away, a complete history can only have come through the stream
NO_REPAIR = {**FAST_SYNC_WORKER, "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "86400",
             "FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS": "0",
             "FLOWER_OPS_SYNC_STREAM_TRIM_INTERVAL_SECONDS": "0.5"}


def test_every_transition_of_a_burst_recorded_with_all_sync_workers_down(
        redis_url: str, database_url: str) -> None:
    app = automation_app(redis_url)
    worker = CeleryWorker(redis_url, concurrency=2).start()
    sync: SyncWorkerProcess | None = None
    try:
        worker.wait_ready(app)
        with app.producer_or_acquire() as producer:
            results = [app.send_task("automation.add", args=(i, i), producer=producer)
                       for i in range(1500)]
        ids = [r.id for r in results]
        # every task ran and ended while no sync worker listened: pub/sub lost it all
        for result in results:
            result.get(timeout=60)
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: sum(int(e[1][b"n"]) for e in client.xrange(STREAM_KEY)) >= 4 * 1500,
                 timeout_seconds=20, message="every event in the stream")
        sync = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                                 env=NO_REPAIR).start()
        wait_history_complete(database_url, ids, timeout_seconds=60)
        # acknowledged after the commit: nothing left pending
        wait_for(lambda: client.xpending(STREAM_KEY, "flower-ops-sync")["pending"] == 0,
                 timeout_seconds=20, message="no pending entries")
        # ... and the leader trims what every group has acknowledged
        wait_for(lambda: client.xlen(STREAM_KEY) == 0, timeout_seconds=20,
                 message="the stream trimmed")
    finally:
        if sync is not None:
            sync.stop()
        worker.stop()


def test_capture_off_writes_no_stream(redis_url: str) -> None:
    from celery import Celery

    from flower_ops import instrument

    app = Celery("capture-off", broker=redis_url, backend=redis_url, set_as_current=False)
    instrument(app, capture=False)
    on = Celery("capture-on", broker=redis_url, backend=redis_url, set_as_current=False)
    instrument(on, capture_stream="other:events")
    app.send_task("automation.add", args=(1, 1))
    sent = on.send_task("automation.add", args=(2, 2))
    client = redis.Redis.from_url(redis_url)
    entries = wait_for(lambda: client.xrange("other:events"), timeout_seconds=10,
                       message="the captured task-sent")
    assert not client.exists(STREAM_KEY)
    assert sent.id in entries[0][1][b"e"].decode()
