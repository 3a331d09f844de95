"""Sync workers that share the load: replicas consume the capture stream in
parallel through one consumer group; one killed with -9 mid-burst loses
nothing, the others claim what it had not acknowledged."""
from __future__ import annotations

from urllib.parse import urlsplit

import redis
from celery import Celery

from testing.apps import automation_app
from testing.processes import CeleryWorker, SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.streams import STREAM_KEY, consumers, wait_history_complete
from testing.tcp_proxy import TcpProxy
from testing.waiting import wait_for

NO_REPAIR = {**FAST_SYNC_WORKER, "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "86400",
             "FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS": "0",
             "FLOWER_OPS_SYNC_CLAIM_IDLE_SECONDS": "2"}
# a replica that reads and never commits on its own before it is killed
NEVER_FLUSHES = {**NO_REPAIR, "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "60",
                 "FLOWER_OPS_SYNC_BATCH_SIZE": "100000"}


def two_replicas_ready(worker: CeleryWorker, app: Celery, redis_url: str) -> None:
    """Until the Celery worker answers and both replicas joined the group."""
    worker.wait_ready(app)
    wait_for(lambda: len(consumers(redis_url)) == 2, timeout_seconds=30,
             message="two consumers in the group")


def test_replicas_share_the_stream_and_one_killed_mid_burst_loses_nothing(
        redis_url: str, database_url: str) -> None:
    app = automation_app(redis_url)
    survivor = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                                 env=NO_REPAIR).start()
    doomed = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                               env=NEVER_FLUSHES).start()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        two_replicas_ready(worker, app, redis_url)
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



def test_a_replica_whose_database_is_away_leaves_new_entries_to_the_others(
        redis_url: str, database_url: str) -> None:
    """A replica that cannot commit stops reading: the entries written
    meanwhile are committed by the others at once, not held until claimed."""
    app = automation_app(redis_url)
    slow_claims = {**NO_REPAIR, "FLOWER_OPS_SYNC_CLAIM_IDLE_SECONDS": "40"}
    target = urlsplit(database_url)
    proxy = TcpProxy(target_host=target.hostname or "127.0.0.1",
                     target_port=target.port or 5432).start()
    healthy = SyncWorkerProcess(redis_url=redis_url, database_url=database_url,
                                env=slow_claims).start()
    cut_off = SyncWorkerProcess(redis_url=redis_url, database_url=proxy.url(database_url),
                                env=slow_claims).start()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        two_replicas_ready(worker, app, redis_url)
        proxy.refuse(True)
        proxy.cut()
        # tasks until the cut-off replica has tried a batch of its own and paused
        first: list[str] = []

        def paused() -> bool:
            first.append(app.send_task("automation.add", args=(0, 0)).id)
            return "not reading while batches fail to commit" in cut_off.output()

        wait_for(paused, timeout_seconds=30, interval_seconds=0.5,
                 message="the cut-off replica to stop reading")
        with app.producer_or_acquire() as producer:
            ids = [app.send_task("automation.add", args=(i, i), producer=producer).id
                   for i in range(500)]
        # well before the 40 s after which the held entries could be claimed
        wait_history_complete(database_url, ids, timeout_seconds=20)
        # what it held before it paused is claimed by the other once idle
        proxy.refuse(False)
        wait_history_complete(database_url, first, timeout_seconds=90)
    finally:
        healthy.stop()
        cut_off.stop()
        worker.stop()
        proxy.close()
