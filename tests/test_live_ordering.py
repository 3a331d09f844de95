"""Feed message order and alert fan-out, found by bench/bench_load.py.

Building a snapshot syncs the task index, and index observers (the health
monitor's task alerts) raise or resolve alerts right then: a snapshot must not
carry an older seq than alert messages sent before it. And under eviction
thousands of stuck-task alerts resolve within seconds: they must not be fanned
out one message per alert per client.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import celery
import flower.options
import flower.urls
import pytest
from celery.events import Event
from flower.app import Flower
from tornado.ioloop import IOLoop

import flower_ops


@pytest.fixture
def ops() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    io_loop = IOLoop(asyncio_loop=loop)  # never started: no timers, the test drives
    options = flower.options.options
    app = Flower(capp=celery.Celery(broker="redis://127.0.0.1:1/0"), options=options,
                 io_loop=io_loop, **flower.urls.settings)
    plugin = flower_ops.install(app)
    yield plugin
    plugin.blocking.shutdown()
    app.executor.shutdown(wait=False)
    io_loop.close(all_fds=True)


def _receive(state: Any, task_id: str) -> None:
    now = time.time()
    state.event(Event("task-received", uuid=task_id, name="automation.add", args="()",
                      kwargs="{}", hostname="celery@w1", timestamp=now, local_received=now,
                      clock=1, utcoffset=0, pid=1))


def _subscribe(feed: Any) -> list[bytes]:
    received: list[bytes] = []
    sub = feed.subscriber(write=lambda message: received.append(message), close=lambda *a: None)
    feed.subscribers.add(sub)
    return received


def test_snapshot_seq_follows_alerts_raised_while_it_was_built(ops: Any) -> None:
    feed = ops.feed
    received = _subscribe(feed)
    sub = next(iter(feed.subscribers))
    # An observer that alerts on every indexed change, as task alerts do
    ops.index.observers.append(
        lambda uuid, old, task: feed.on_alert("raised", {"id": f"test:{uuid}"}))

    _receive(ops.index.state, "t-1")
    feed.send_snapshot(sub)
    feed.flush()
    _receive(ops.index.state, "t-2")
    feed.broadcast_snapshot()
    feed.flush()

    messages = [json.loads(m) for m in received]
    assert [m["type"] for m in messages if m["type"] != "tasks"] == [
        "snapshot", "alert", "snapshot", "alert"]
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_alert_changes_are_coalesced_per_alert_until_the_flush(ops: Any) -> None:
    feed = ops.feed
    received = _subscribe(feed)
    feed.on_alert("raised", {"id": "a"})
    feed.on_alert("raised", {"id": "b"})
    feed.on_alert("resolved", {"id": "a"})
    assert received == []
    feed.flush()
    messages = [json.loads(m) for m in received]
    assert [(m["event"], m["alert"]["id"]) for m in messages] == [("raised", "b"),
                                                                  ("resolved", "a")]


def test_an_alert_burst_is_left_to_the_next_snapshot(ops: Any) -> None:
    from flower_ops.monitor.live.feed import ALERT_WRITES_PER_FLUSH

    feed = ops.feed
    received = _subscribe(feed)
    others = [_subscribe(feed) for _ in range(9)]
    burst = ALERT_WRITES_PER_FLUSH // 10 + 1  # one write per alert per client
    for n in range(burst):
        feed.on_alert("raised", {"id": f"burst:{n}"})
    feed.flush()
    assert received == [] and not any(others)
    assert feed.stats["alerts_deferred"] == burst
    feed.broadcast_snapshot()
    assert [json.loads(m)["type"] for m in received] == ["snapshot"]
