"""Sync workers that share the load: replicas consume the capture stream in
parallel through one consumer group; one killed with -9 mid-burst loses
nothing, the others claim what it had not acknowledged."""
from __future__ import annotations

import redis

from testing.apps import automation_app
from testing.processes import CeleryWorker, SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.streams import STREAM_KEY, consumers, wait_history_complete
from testing.waiting import wait_for

NO_REPAIR = {**FAST_SYNC_WORKER, "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "86400",
             "FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS": "0",
             "FLOWER_OPS_SYNC_CLAIM_IDLE_SECONDS": "2"}
# a replica that reads and never commits on its own before it is killed
NEVER_FLUSHES = {**NO_REPAIR, "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "60",
                 "FLOWER_OPS_SYNC_BATCH_SIZE": "100000"}


def test_replicas_share_the_stream_and_one_killed_mid_burst_loses_nothing(
        redis_url: str, database_url: str) -> None:
    app = automation_app(redis_url)
    survivor = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                                 env=NO_REPAIR).start()
    doomed = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                               env=NEVER_FLUSHES).start()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        wait_for(lambda: len(consumers(redis_url)) == 2, timeout_seconds=30,
                 message="two consumers in the group")
        with app.producer_or_acquire() as producer:
            ids = [app.send_task("automation.add", args=(i, i), producer=producer).id
                   for i in range(3000)]
        # the doomed one got its share and holds entries it never acknowledges
        def doomed_pending() -> int:
            return sum(c["pending"] for name, c in consumers(redis_url).items()
                       if f"-{doomed.pid}-" in name)

        wait_for(doomed_pending, timeout_seconds=30, message="entries pending on a replica")
        doomed.kill()
        wait_history_complete(database_url, ids, timeout_seconds=60)
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: client.xpending(STREAM_KEY, "flower-ops-sync")["pending"] == 0,
                 timeout_seconds=20, message="no pending entries")
        assert "claimed" in survivor.output()
    finally:
        survivor.stop()
        doomed.stop()
        worker.stop()

