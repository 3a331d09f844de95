"""Queue numbers from a real Redis broker match what Redis holds: priority
sub-queues summed, unacked messages of a real worker (acks_late, prefetch),
the age of the oldest message."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from flower_ops import instrument
from flower_ops.monitor.sources.broker import RedisQueueSource
from testing.processes import CeleryWorker
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

@pytest.fixture
def client_app(redis_url: str) -> Iterator[Celery]:
    app = Celery("queues-client", broker=redis_url, set_as_current=False)
    app.conf.task_ignore_result = True
    instrument(app)
    yield app
    app.close()


@pytest.fixture
def source(redis_url: str) -> Iterator[RedisQueueSource]:
    source = RedisQueueSource(broker_url=redis_url)
    yield source
    source.close()


def test_ready_messages_sum_priority_subqueues_as_redis_holds_them(
        redis_url: str, client_app: Celery, source: RedisQueueSource) -> None:
    with client_app.producer_or_acquire() as producer:
        for i in range(20):
            client_app.send_task("queues.slow", args=(0,), queue="q-prio", priority=i % 10,
                                 producer=producer)
    raw = redis.Redis.from_url(redis_url)
    held = {label: raw.llen(key) for label, key in source.keys_for("q-prio")}
    assert sum(held.values()) == 20
    assert sum(1 for count in held.values() if count) > 1, "priorities spread over sub-queues"

    depth = source.fetch(["q-prio"]).queues["q-prio"]
    assert depth.messages == 20
    assert depth.by_priority == {label: n for label, n in held.items() if n}
    assert depth.oldest_message_age_seconds is not None
    assert 0 <= depth.oldest_message_age_seconds < 60


def test_unacked_counts_messages_a_late_acking_worker_holds(
        redis_url: str, client_app: Celery, source: RedisQueueSource) -> None:
    worker = CeleryWorker(redis_url, app="testing.apps.late_acks", queues=["q-slow"],
                          concurrency=1)
    worker.start().wait_ready(client_app)
    raw = redis.Redis.from_url(redis_url)
    try:
        for _ in range(6):
            client_app.send_task("queues.slow", args=(30,), queue="q-slow")

        def settled() -> bool:
            depth = source.fetch(["q-slow"]).queues["q-slow"]
            # 1 running + 3 prefetched (prefetch 4 x 1 process), 2 left waiting
            return depth.unacked == 4 and depth.messages == 2

        wait_for(settled, timeout_seconds=30, message="4 unacked, 2 ready")
        snapshot = source.fetch(["q-slow", "q-empty"])
        assert snapshot.unacked_total == raw.hlen("unacked") == 4
        assert snapshot.queues["q-slow"].messages == raw.llen("q-slow") == 2
        assert snapshot.queues["q-empty"].messages == 0
        assert snapshot.queues["q-empty"].unacked == 0
    finally:
        worker.kill()


def test_rates_come_from_per_second_counts_of_dequeued_tasks() -> None:
    from flower_ops.monitor.services.queues import DEQUEUE_HORIZON_SECONDS, QueueService
    from flower_ops.monitor.sources.broker import BrokerSnapshot, QueueDepth

    service = QueueService(source=None, transport="redis", queue_names=lambda: [],
                           consumers=dict)
    t0 = 1_700_000_000.0
    for n in range(200):  # 20 tasks/s leave "fast" for 10 s, 1 every 2 s leaves "slow"
        service.note_dequeued("fast", t0 + n * 0.05)
        if n % 40 == 0:
            service.note_dequeued("slow", t0 + n * 0.05)
    for at, depth in ((t0, 50), (t0 + 10, 30)):
        service.apply(BrokerSnapshot(transport="redis", taken_at=at, source="test",
                                     unacked_total=0,
                                     queues={"fast": QueueDepth("fast", depth, 0)}))
    rate_in, rate_out = service.rates("fast", t0 + 10)
    assert rate_out == pytest.approx(20, rel=0.1)
    assert rate_in == pytest.approx(18, rel=0.1)  # out, less the 20 messages it shrank by
    # Counters far behind the newest second are dropped as time moves on
    service.note_dequeued("fast", t0 + 10 + DEQUEUE_HORIZON_SECONDS + 1)
    assert min(service._dequeued["slow"], default=None) is None
