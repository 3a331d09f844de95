"""Queue depths read from kombu's Redis layout, with kombu itself producing and
consuming, under default and non-default transport options."""
from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from flower_ops.monitor.sources.broker import RedisQueueSource

OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"global_keyprefix": "tenant1:", "sep": ":", "priority_steps": [0, 5, 10]},
                 id="prefix-sep-steps"),
]


def publish(conn: Connection, queue: Queue, priorities: list[int]) -> None:
    with conn.Producer() as producer:
        for n, priority in enumerate(priorities):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], priority=priority, serializer="json")


@pytest.mark.parametrize("options", OPTIONS)
def test_counts_ready_priority_and_unacked(redis_url: str, options: dict[str, Any]) -> None:
    work = Queue("work", Exchange("work", type="direct"), routing_key="work")
    other = Queue("other", Exchange("other", type="direct"), routing_key="other")
    source = RedisQueueSource(broker_url=redis_url, transport_options=options)
    with Connection(redis_url, transport_options=options) as conn:
        publish(conn, work, [0, 0, 0, 9, 9, 5])
        publish(conn, other, [0, 0])
        # Take two messages without acknowledging them: kombu parks them in
        # its unacked hash until they are acked or restored
        channel = conn.channel()
        held = [channel.basic_get("work", no_ack=False), channel.basic_get("work", no_ack=False)]
        assert all(held)
        snapshot = source.fetch(["work", "other", "missing"])
        channel.close()

    steps = options.get("priority_steps", [0, 3, 6, 9])
    work_depth = snapshot.queues["work"]
    assert work_depth.messages == 4  # six published, two taken
    assert work_depth.unacked == 2
    assert snapshot.unacked_total == 2
    assert snapshot.queues["other"].messages == 2 and snapshot.queues["other"].unacked == 0
    assert snapshot.queues["missing"].messages == 0
    # Every message lands in the sub-queue of its priority step
    assert set(work_depth.by_priority) <= {str(s) for s in steps}
    assert sum(work_depth.by_priority.values()) == work_depth.messages


def test_keys_follow_kombu_naming() -> None:
    source = RedisQueueSource(broker_url="redis://127.0.0.1:1/0",
                              transport_options={"global_keyprefix": "p:", "sep": "|",
                                                 "priority_steps": [0, 4]})
    assert source.keys_for("jobs") == [("0", "p:jobs"), ("4", "p:jobs|4")]
    assert source.unacked_key == "p:unacked"
    default = RedisQueueSource(broker_url="redis://127.0.0.1:1/0")
    assert [key for _, key in default.keys_for("q")] == [
        "q", "q\x06\x163", "q\x06\x166", "q\x06\x169"]
