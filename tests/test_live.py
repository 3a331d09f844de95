"""The live feed end to end: a real `celery -A APP flower-ops` process fed by a
real Celery worker, real JWTs, a real WebSocket client (Tornado's)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import jwt
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from testing.services import RedisService
from testing.settings import FAST_MONITOR_REFRESH
from testing.stack import Stack, running_stack

SECRET = "live-feed-test-secret-0123456789"
ALLOWED_ORIGIN = "http://dashboard.example"
WS_PATH = "/api/automation/monitoring/ws"


def token(*, scope: str = "monitoring:read", ttl_seconds: float = 600) -> str:
    now = time.time()
    return jwt.encode({"sub": "live-test", "scope": scope, "iat": int(now),
                       "exp": int(now + ttl_seconds)}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    env = {
        **FAST_MONITOR_REFRESH,
        "JWT_SECRET": SECRET,
        "FLOWER_OPS_WS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "FLOWER_OPS_WS_SNAPSHOT_SECONDS": "0.5",
        "FLOWER_OPS_WS_CLIENT_QUEUE_SIZE": "200",
        "FLOWER_OPS_WS_CLIENT_BUFFER_BYTES": str(2 * 1024 * 1024),
    }
    with running_stack(broker_url=redis_service.url(redis_db), monitor_env=env) as stack:
        yield stack


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))  # type: ignore[arg-type]


async def connect(stack: Stack, *, bearer: str | None = None, origin: str | None = None,
                  query: str = "") -> WebSocketClientConnection:
    headers = {}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    if origin is not None:
        headers["Origin"] = origin
    return await websocket_connect(HTTPRequest(stack.monitor.ws_url + query, headers=headers,
                                               connect_timeout=10, request_timeout=10))


async def receive(conn: WebSocketClientConnection, timeout_seconds: float = 15) -> Any:
    raw = await asyncio.wait_for(conn.read_message(), timeout_seconds)
    return None if raw is None else json.loads(raw)


async def until(conn: WebSocketClientConnection, predicate: Callable[[dict[str, Any]], bool],
                *, timeout_seconds: float = 30, seen: list[dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no matching feed message in time")
        message = await receive(conn, remaining)
        if message is None:
            raise AssertionError(f"feed closed: {conn.close_code} {conn.close_reason}")
        if seen is not None:
            seen.append(message)
        if predicate(message):
            return message


async def closed(conn: WebSocketClientConnection, timeout_seconds: float = 15
                 ) -> tuple[int | None, list[dict[str, Any]]]:
    messages = []
    while True:
        message = await receive(conn, timeout_seconds)
        if message is None:
            return conn.close_code, messages
        messages.append(message)


def has_task(task_id: str, state: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(message: dict[str, Any]) -> bool:
        return message["type"] in ("tasks", "snapshot") and any(
            t["id"] == task_id and (state is None or t["state"] == state)
            for t in message["tasks"])
    return check


# -- authentication -----------------------------------------------------------------------


def test_bearer_header_gets_a_full_snapshot_first(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack, bearer=token())
        first = await receive(conn)
        assert first["type"] == "snapshot"
        assert isinstance(first["seq"], int)
        for key in ("stats", "workers", "queues", "tasks", "alerts"):
            assert key in first, key
        assert first["stats"]["tasks"]["by_state"].keys() >= {"SUCCESS", "FAILURE"}
        conn.close()
    run(body())


def test_first_message_auth_gets_a_snapshot(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack)
        await conn.write_message(json.dumps({"type": "auth", "token": token()}))
        first = await receive(conn)
        assert first["type"] == "snapshot"
        conn.close()
    run(body())


def test_without_a_token_the_socket_closes_after_the_auth_timeout(stack: Stack) -> None:
    async def body() -> None:
        started = time.monotonic()
        conn = await connect(stack)
        code, messages = await closed(conn)
        assert code == 4001 and messages == []
        assert time.monotonic() - started >= 4
    run(body())


def test_a_token_in_the_url_is_ignored(stack: Stack) -> None:
    async def body() -> None:
        valid = token()
        conn = await connect(stack, query=f"?token={valid}&access_token={valid}")
        code, messages = await closed(conn)
        assert code == 4001 and messages == []
    run(body())


def test_messages_before_auth_close_the_socket(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack)
        await conn.write_message(json.dumps({"type": "subscribe", "filters": {}}))
        code, messages = await closed(conn)
        assert code == 4001 and messages == []
    run(body())


def test_expired_and_invalid_tokens_are_refused(stack: Stack) -> None:
    async def body() -> None:
        for bad in (token(ttl_seconds=-60), token() + "x", "not-a-jwt"):
            with pytest.raises(HTTPClientError) as refused:
                await connect(stack, bearer=bad)
            assert refused.value.code == 401
            conn = await connect(stack)
            await conn.write_message(json.dumps({"type": "auth", "token": bad}))
            code, messages = await closed(conn)
            assert code == 4001 and messages == []
    run(body())


def test_read_scope_is_required(stack: Stack) -> None:
    async def body() -> None:
        with pytest.raises(HTTPClientError) as refused:
            await connect(stack, bearer=token(scope="monitoring:write"))
        assert refused.value.code == 403
        conn = await connect(stack)
        await conn.write_message(json.dumps({"type": "auth",
                                             "token": token(scope="something:else")}))
        code, _ = await closed(conn)
        assert code == 4003
    run(body())


def test_the_socket_closes_when_its_token_expires(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack, bearer=token(ttl_seconds=3))
        assert (await receive(conn))["type"] == "snapshot"
        code, _ = await closed(conn)
        assert code == 4001 and conn.close_reason == "token expired"
    run(body())


def test_a_fresh_auth_message_extends_the_socket(stack: Stack) -> None:
    async def body() -> None:
        conn = await connect(stack, bearer=token(ttl_seconds=3))
        await conn.write_message(json.dumps({"type": "auth", "token": token()}))
        await until(conn, lambda m: m["type"] == "auth_ok")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # keeps receiving past the first token's expiry
            assert await receive(conn) is not None
        conn.close()
    run(body())


def test_cross_origin_upgrades_are_refused_unless_allowed(stack: Stack) -> None:
    async def body() -> None:
        with pytest.raises(HTTPClientError) as refused:
            await connect(stack, bearer=token(), origin="http://evil.example")
        assert refused.value.code == 403
        same = await connect(stack, bearer=token(),
                             origin=f"http://127.0.0.1:{stack.monitor.port}")
        assert (await receive(same))["type"] == "snapshot"
        same.close()
        allowed = await connect(stack, bearer=token(), origin=ALLOWED_ORIGIN)
        assert (await receive(allowed))["type"] == "snapshot"
        allowed.close()
    run(body())


# -- snapshot, deltas, resume, filters ------------------------------------------------------


def test_snapshot_then_task_changes_as_they_happen(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        conn = await connect(stack, bearer=token())
        seen: list[dict[str, Any]] = []
        assert (await until(conn, lambda m: True, seen=seen))["type"] == "snapshot"
        result = automation.add.delay(20, 22)
        started = time.monotonic()
        await until(conn, has_task(result.id), seen=seen, timeout_seconds=10)
        assert time.monotonic() - started < 5
        # Changes are coalesced: the first message may already carry SUCCESS
        if not has_task(result.id, "SUCCESS")(seen[-1]) or seen[-1]["type"] != "tasks":
            await until(conn, lambda m: m["type"] == "tasks" and has_task(
                result.id, "SUCCESS")(m), seen=seen)
        done = seen[-1]
        task = next(t for t in done["tasks"] if t["id"] == result.id)
        assert task["name"] == "automation.add" and task["result"] == 42
        assert task["args"] == [20, 22] and task["worker"] == stack.worker.hostname
        # Every message has a type and a strictly increasing seq
        seqs = [m["seq"] for m in seen]
        assert all(m["type"] for m in seen) and seqs == sorted(set(seqs))
        # ...and refreshed snapshots keep coming (0.5 s here; 2 s by default)
        await until(conn, lambda m: m["type"] == "snapshot", timeout_seconds=5)
        await conn.write_message(json.dumps({"type": "ping"}))
        await until(conn, lambda m: m["type"] == "pong")
        await conn.write_message("{not json")
        await until(conn, lambda m: m["type"] == "error")
        conn.close()
    run(body())


def test_reconnecting_with_the_last_seq_replays_what_was_missed(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        conn = await connect(stack, bearer=token())
        last = (await receive(conn))["seq"]
        conn.close()
        missed = [automation.add.delay(i, i) for i in range(3)]
        for result in missed:
            result.get(timeout=30)
        await asyncio.sleep(0.5)  # let the monitor flush the last events
        # A browser passes the seq in its auth message...
        again = await connect(stack)
        await again.write_message(json.dumps({"type": "auth", "token": token(),
                                              "resume": last}))
        seen: list[dict[str, Any]] = []
        resumed = await until(again, lambda m: m["type"] in ("resumed", "snapshot"), seen=seen)
        assert resumed["type"] == "resumed" and resumed["from_seq"] == last
        replayed = [t for m in seen if m["type"] == "tasks" for t in m["tasks"]]
        assert all(m["seq"] > last for m in seen)
        for result in missed:
            assert any(t["id"] == result.id and t["state"] == "SUCCESS" for t in replayed)
        again.close()
        # ...a header client in the URL (only the seq; never a token)
        header = await connect(stack, bearer=token(), query=f"?resume={last}")
        first = await receive(header)
        assert first["type"] == "tasks" and first["seq"] > last
        header.close()
        # A seq the buffer no longer covers gets a fresh snapshot instead
        stale = await connect(stack, bearer=token(), query="?resume=1")
        first = await receive(stale)
        assert first["type"] == "snapshot" and first["resync"] is True
        stale.close()
    run(body())


def test_subscription_filters_by_name_and_state(stack: Stack) -> None:
    from testing.apps import automation

    async def body() -> None:
        conn = await connect(stack, bearer=token())
        await receive(conn)
        await conn.write_message(json.dumps({"type": "subscribe",
                                             "filters": {"name": ["automation.fail"]}}))
        snapshot = await until(conn, lambda m: m["type"] == "snapshot"
                               and m["filters"]["name"] == ["automation.fail"])
        assert all(t["name"] == "automation.fail" for t in snapshot["tasks"])
        ok = automation.add.delay(1, 1)
        bad = automation.fail.delay("filtered")
        seen: list[dict[str, Any]] = []
        await until(conn, has_task(bad.id, "FAILURE"), seen=seen)
        ok.get(timeout=30)
        await asyncio.sleep(1)
        while True:  # drain what is already there
            try:
                seen.append(await receive(conn, 0.5))
            except asyncio.TimeoutError:
                break
        tasks = [t for m in seen if m["type"] in ("tasks", "snapshot") for t in m["tasks"]]
        assert tasks and all(t["name"] == "automation.fail" for t in tasks)
        assert not any(t["id"] == ok.id for t in tasks)

        await conn.write_message(json.dumps({"type": "subscribe",
                                             "filters": {"state": "STARTED"}}))
        await until(conn, lambda m: m["type"] == "snapshot"
                    and m["filters"]["state"] == ["STARTED"])
        # long enough that STARTED and SUCCESS never fold into one flush under load
        slow = automation.sleep.delay(4)
        await until(conn, has_task(slow.id, "STARTED"))
        # the change that takes it out of the filter still arrives, once
        await until(conn, has_task(slow.id, "SUCCESS"))
        await conn.write_message(json.dumps({"type": "subscribe",
                                             "filters": {"state": ["NOPE"]}}))
        error = await until(conn, lambda m: m["type"] == "error")
        assert error["error"] == "unknown state"
        conn.close()
    run(body())


# -- backpressure -----------------------------------------------------------------------------


def _raw_stuck_client(stack: Stack) -> tuple[socket.socket, bytes]:
    """A WebSocket client that upgrades and then never reads, with a tiny buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.monitor.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{stack.monitor.port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token()}\r\n\r\n"
                  ).encode())
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:200]
    return sock, head.split(b"\r\n\r\n", 1)[1]


def _close_codes(data: bytes) -> list[int]:
    codes, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = struct.unpack(">H", data[i:i + 2])[0]
            i += 2
        elif length == 127:
            length = struct.unpack(">Q", data[i:i + 8])[0]
            i += 8
        if opcode == 0x8 and length >= 2 and i + 2 <= len(data):
            codes.append(struct.unpack(">H", data[i:i + 2])[0])
        i += length
    return codes


def test_a_stuck_client_is_dropped_while_a_fast_one_keeps_receiving(stack: Stack) -> None:
    from testing.apps import automation

    stuck, leftover = _raw_stuck_client(stack)
    bulky = "x" * 8000

    async def body() -> None:
        fast = await connect(stack, bearer=token())
        await receive(fast)
        dropped_at: float | None = None
        batch = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # Big tasks make every snapshot big, so the stuck socket fills fast
            ids = [automation.echo.delay(bulky, n=batch * 100 + i).id for i in range(20)]
            batch += 1
            await until(fast, has_task(ids[-1]), timeout_seconds=20)
            if "dropped a slow live feed client" in stack.monitor.output():
                dropped_at = time.monotonic()
                break
        assert dropped_at is not None, "the stuck client was never dropped"
        # The fast client keeps getting fresh changes after the drop
        after = automation.add.delay(7, 8)
        await until(fast, has_task(after.id, "SUCCESS"), timeout_seconds=20)
        fast.close()

    try:
        run(body())
        # Whatever it buffered ends with our close code, then the server hangs up
        sock_data = bytearray(leftover)
        stuck.settimeout(20)
        while True:
            try:
                chunk = stuck.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            sock_data.extend(chunk)
        assert 4008 in _close_codes(bytes(sock_data))
    finally:
        stuck.close()
