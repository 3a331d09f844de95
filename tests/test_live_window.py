"""Window subscriptions of the live feed (docs/live-feed.md, "Window mode"):
a real monitor fed by a real Celery worker, real JWTs, Tornado's WebSocket
client. A window client receives its rows and fresh numbers, not every change,
and what it holds after applying the messages is what ``GET /tasks`` says."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection

from testing.services import RedisService
from testing.settings import FAST_MONITOR_REFRESH
from testing.stack import Stack, running_stack
from tests.test_live import SECRET, connect, receive, run, token, until


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    env = {**FAST_MONITOR_REFRESH, "JWT_SECRET": SECRET,
           "FLOWER_OPS_WS_SNAPSHOT_SECONDS": "0.5"}
    with running_stack(broker_url=redis_service.url(redis_db), monitor_env=env) as stack:
        yield stack


class Window:
    """A client's copy of its window, kept by applying snapshot and view messages."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.total = 0
        self.kinds: list[str] = []

    def apply(self, message: dict[str, Any]) -> None:
        self.kinds.append(message["type"])
        if message["type"] == "snapshot":
            assert message["mode"] == "window"
            self.rows = {t["id"]: t for t in message["tasks"]}
            self.total = message["total"]
        elif message["type"] == "view":
            for task in message["rows"]:
                assert task["id"] not in self.rows, "a row sent whole twice"
                self.rows[task["id"]] = task
            for change in message["changed"]:
                row = self.rows[change["id"]]  # only rows the client holds change
                row.update(change)
                for key in [k for k, v in row.items() if v is None]:
                    del row[key]
            for task_id in message["left"]:
                del self.rows[task_id]
            self.total = message["total"]


async def subscribe(conn: WebSocketClientConnection, window: Window, **body: Any
                    ) -> dict[str, Any]:
    await conn.write_message(json.dumps({"type": "subscribe", "mode": "window", **body}))
    snapshot = await until(conn, lambda m: m["type"] in ("snapshot", "error"))
    assert snapshot["type"] == "snapshot", snapshot
    window.apply(snapshot)
    return snapshot


async def follow(conn: WebSocketClientConnection, window: Window, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await receive(conn, left)
        except asyncio.TimeoutError:
            return
        assert message is not None, f"feed closed: {conn.close_code}"
        window.apply(message)


def newest(stack: Stack, limit: int) -> list[dict[str, Any]]:
    return stack.get_json("/tasks", limit=limit, source="memory")["tasks"]


def test_a_window_holds_the_newest_rows_as_the_api_lists_them(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        conn = await connect(stack, bearer=token())
        await receive(conn)  # the header client's first snapshot (every change)
        window = Window()
        snapshot = await subscribe(conn, window, limit=3)
        assert snapshot["limit"] == 3 and snapshot["ids"] == [] and len(snapshot["tasks"]) <= 3
        results = [automation.add.delay(i, 100) for i in range(6)]
        for result in results:
            result.get(timeout=30)
        expected = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await follow(conn, window, 1.0)
            expected = newest(stack, 3)
            if set(window.rows) == {t["id"] for t in expected} and all(
                    window.rows[t["id"]]["state"] == t["state"] for t in expected):
                break
        # Every row equals the API's summary of the task (nulls left out)
        assert set(window.rows) == {t["id"] for t in expected}
        for task in expected:
            assert window.rows[task["id"]] == {k: v for k, v in task.items() if v is not None}
        assert window.total == stack.get_json("/tasks", limit=1, source="memory")["total"]
        assert {t["id"] for t in expected} <= {r.id for r in results}
        # Only window messages: never every change; fresh numbers keep coming
        assert "tasks" not in window.kinds[1:]
        assert "numbers" in window.kinds and "view" in window.kinds
        conn.close()
    run(body())


def test_a_task_page_window_follows_its_task_and_nothing_else(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        slow = automation.sleep.delay(2)
        conn = await connect(stack, bearer=token())
        await receive(conn)
        window = Window()
        await subscribe(conn, window, limit=0, ids=[slow.id, "no-such-task"])
        other = automation.add.delay(1, 2)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and window.rows.get(slow.id, {}).get(
                "state") != "SUCCESS":
            message = await receive(conn, deadline - time.monotonic())
            assert message is not None
            seen.append(message)
            window.apply(message)
        assert window.rows[slow.id]["state"] == "SUCCESS"
        assert set(window.rows) == {slow.id}
        other.get(timeout=30)
        await follow(conn, window, 1.0)
        assert set(window.rows) == {slow.id}
        # Only the fields that changed travel for a row the client holds
        changes = [c for m in seen if m["type"] == "view" for c in m["changed"]]
        assert changes and all("name" not in c and "args" not in c for c in changes)
        conn.close()
    run(body())


def test_clients_of_one_window_share_its_messages(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        conns = [await connect(stack, bearer=token()) for _ in range(2)]
        windows = [Window(), Window()]
        for conn, window in zip(conns, windows, strict=True):
            await receive(conn)
            await subscribe(conn, window, limit=2, filters={"name": "automation.add"})
        automation.add.delay(7, 7).get(timeout=30)
        views = []
        for conn in conns:
            views.append(await until(conn, lambda m: m["type"] == "view"))
        assert views[0] == views[1]  # one message, same seq, for both
        conns[0].close()
        conns[1].close()
    run(body())


def test_window_subscriptions_refuse_bad_input_and_resume_with_a_snapshot(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack, bearer=token())
        first = await receive(conn)
        for bad in ({"mode": "everything"}, {"ids": ["x"]},
                    {"mode": "window", "ids": "x"}, {"mode": "window", "limit": 501},
                    {"mode": "window", "ids": ["x"] * 501}, {"limit": 0}):
            await conn.write_message(json.dumps({"type": "subscribe", **bad}))
            error = await until(conn, lambda m: m["type"] == "error")
            assert error["error"], bad
        conn.close()
        # A browser asks for its window in the auth message; a resume of a
        # window client is a fresh snapshot of the window
        again = await connect(stack)
        await again.write_message(json.dumps({"type": "auth", "token": token(), "mode": "window",
                                              "limit": 1, "resume": first["seq"]}))
        snapshot = await until(again, lambda m: m["type"] == "snapshot")
        assert snapshot["mode"] == "window" and snapshot["resync"] is True
        assert len(snapshot["tasks"]) <= 1
        again.close()
    run(body())
