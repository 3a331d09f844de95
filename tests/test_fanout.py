"""FanOut (live/fanout.py): one message to many feed clients in bounded
slices, in order, skipping a client that was sent a newer message meanwhile."""
from __future__ import annotations

import asyncio
import time

import pytest
from tornado.ioloop import IOLoop

from flower_ops.monitor.live.fanout import FanOut
from flower_ops.monitor.live.subscriber import Subscriber

pytestmark = pytest.mark.no_services


def _subscriber(received: list[tuple[int, bytes]]) -> Subscriber:
    def write(message: bytes) -> None:
        time.sleep(0.0002)  # a socket write's worth of IOLoop time
        received.append((len(received), message))
    return Subscriber(write=write, close=lambda code, reason: None, max_messages=10,
                      max_bytes=1 << 20)


def test_messages_go_out_in_order_in_slices_and_a_newer_message_supersedes() -> None:
    async def body() -> None:
        loop = IOLoop.current()
        fanout = FanOut(loop, slice_seconds=0.002)
        inboxes: list[list[tuple[int, bytes]]] = [[] for _ in range(200)]
        subs = [_subscriber(inbox) for inbox in inboxes]
        fanout.send(b"view-10", 10, subs)
        fanout.send(b"view-12", 12, subs)
        # before the fan-out runs, one client gets a snapshot (seq 11) directly
        subs[150].send(b"snapshot-11", 11)
        ticks = 0
        while len(fanout):
            ticks += 1  # the IOLoop runs other callbacks between slices
            await asyncio.sleep(0)
        assert fanout.stats["slices"] > 2 and ticks > 2
        for index, inbox in enumerate(inboxes):
            messages = [m for _, m in inbox]
            if index == 150:
                assert messages == [b"snapshot-11", b"view-12"]  # view-10 superseded
            else:
                assert messages == [b"view-10", b"view-12"]

    asyncio.run(body())


def test_a_direct_message_is_never_skipped() -> None:
    received: list[tuple[int, bytes]] = []
    sub = _subscriber(received)
    assert sub.send(b"b", 5) and sub.send(b"a", 3)  # replays keep their own seq
    assert [m for _, m in received] == [b"b", b"a"]
