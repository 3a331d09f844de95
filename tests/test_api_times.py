"""Every time the API says is ISO 8601 in UTC with milliseconds, every
duration seconds rounded to the millisecond, and ``since``/``until`` without
an offset are UTC — whatever the monitor's own time zone. A real monitor
(with ``TZ=America/New_York``), Celery worker, sync worker, Redis and
PostgreSQL."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
import websocket

from flower_ops.core.lifecycle import TIMESTAMP_FIELDS
from flower_ops.core.times import ISO_PATTERN, parse_instant
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

ISO = re.compile(ISO_PATTERN)
MONITOR_TZ = "America/New_York"     # never UTC: a naive time read as local would be 5 h off


def is_iso(value: Any) -> bool:
    return isinstance(value, str) and ISO.fullmatch(value) is not None


def is_duration(value: Any) -> bool:
    """A number of seconds with at most three decimals."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and round(value, 3) == value and len(repr(float(value)).split(".")[1]) <= 3)


def check_task_times(task: dict[str, Any]) -> None:
    for field in (*TIMESTAMP_FIELDS, "timestamp", "eta", "expires", "updated"):
        value = task.get(field)
        assert value is None or is_iso(value), (field, value)
    assert task.get("runtime") is None or is_duration(task["runtime"]), task["runtime"]
    for step in task.get("history") or ():
        assert is_iso(step["timestamp"]), step
        assert step.get("runtime") is None or is_duration(step["runtime"]), step


def naive_utc(delta: timedelta) -> str:
    """Now plus ``delta`` as a naive ISO 8601 time in UTC (no offset, no Z)."""
    return (datetime.now(timezone.utc) + delta).replace(tzinfo=None).isoformat(
        timespec="seconds")


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(name),
                           monitor_env={**FAST_MONITOR_REFRESH, "TZ": MONITOR_TZ},
                           sync_env={**FAST_SYNC_WORKER, "TZ": MONITOR_TZ}) as stack:
            yield stack
    finally:
        pg_service.drop_database(name)


@pytest.fixture(scope="module")
def finished(stack: Stack) -> dict[str, Any]:
    """A task that succeeded, once PostgreSQL has its row too."""
    from testing.apps import automation

    result = automation.add.delay(20, 22)
    detail = stack.wait_state(result.id, "SUCCESS")
    stack.wait_status(result.id, "success")
    return detail


def test_task_detail_and_listings_say_times_in_iso_and_runtime_in_milliseconds(
        stack: Stack, finished: dict[str, Any]) -> None:
    detail = stack.task(finished["id"])
    check_task_times(detail)
    for field in ("sent", "received", "started", "succeeded", "timestamp"):
        assert is_iso(detail[field]), field
    assert detail["failed"] is None and detail["revoked"] is None
    assert parse_instant(detail["received"]) <= parse_instant(detail["succeeded"])
    assert abs(parse_instant(detail["succeeded"]) - time.time()) < 120
    assert is_duration(detail["runtime"]) and detail["runtime"] >= 0
    assert [step["state"] for step in detail["history"]] == [
        "PENDING", "RECEIVED", "STARTED", "SUCCESS"]

    for source in ("memory", "db"):
        page = stack.get_json("/tasks", source=source, limit=100)
        listed = [t for t in page["tasks"] if t["id"] == finished["id"]]
        assert listed, source
        for task in page["tasks"]:
            check_task_times(task)
        assert is_iso(listed[0]["succeeded"]) and is_duration(listed[0]["runtime"])
    stored = stack.get_json("/tasks", source="db", limit=100)["tasks"]
    assert is_iso(next(t for t in stored if t["id"] == finished["id"])["updated"])


def test_memory_and_postgresql_agree_on_times_whatever_their_time_zones(
        stack: Stack, finished: dict[str, Any]) -> None:
    """The monitor and the sync worker run with TZ=America/New_York, the Celery
    worker in the machine's zone: Celery's receivers shift every event by the
    gap (celery/celery#2482); both undo it, so both say the same instants."""
    memory = stack.get_json(f"/tasks/{finished['id']}")
    stored = next(t for t in stack.get_json("/tasks", source="db", limit=100)["tasks"]
                  if t["id"] == finished["id"])
    for field in ("sent", "received", "started", "succeeded"):
        assert memory[field] and stored[field], field
        gap = abs(parse_instant(memory[field]) - parse_instant(stored[field]))
        assert gap < 0.002, (field, memory[field], stored[field])
        assert abs(parse_instant(stored[field]) - time.time()) < 300, (field, stored[field])


def test_workers_stats_and_queues_say_iso_and_rounded_seconds(
        stack: Stack, finished: dict[str, Any]) -> None:
    def described() -> dict[str, Any] | None:
        workers = stack.get_json("/workers")["workers"]
        match = [w for w in workers if w["hostname"] == stack.worker.hostname]
        return match[0] if match and match[0]["inspected_at"] else None

    worker = wait_for(described, timeout_seconds=30, message="worker inspected")
    assert is_iso(worker["last_heartbeat"]) and is_iso(worker["inspected_at"])
    assert worker["offline_since"] is None
    assert is_duration(worker["heartbeat_age_seconds"])
    assert is_duration(worker["inspect_age_seconds"])
    measured = (worker.get("memory") or {}).get("measured_at")
    assert measured is None or is_iso(measured)

    stats = stack.get_json("/stats")
    assert is_iso(stats["generated_at"])
    runtimes = stats["runtime"]["automation.add"]
    assert runtimes["count"] >= 1
    for key in ("p50", "p95", "p99"):
        assert is_duration(runtimes[key]), (key, runtimes[key])

    queues = stack.get_json("/queues")
    assert is_iso(queues["broker"]["refreshed_at"])
    assert is_duration(queues["broker"]["age_seconds"])
    for queue in queues["queues"]:
        age = queue["oldest_message_age_seconds"]
        assert age is None or is_duration(age), queue

    token = requests.post(f"{stack.api}/token", auth=stack.monitor.basic_auth, json={},
                          timeout=5).json()
    assert is_iso(token["expires_at"])
    assert abs(parse_instant(token["expires_at"]) - time.time() - token["expires_in"]) < 60


def test_the_live_feed_says_times_in_iso(stack: Stack, finished: dict[str, Any]) -> None:
    from testing.apps import automation

    ws = websocket.create_connection(stack.monitor.ws_url, timeout=15, suppress_origin=True)
    try:
        ws.send(json.dumps({"type": "auth", "token": stack.token}))
        snapshot = json.loads(ws.recv())
        assert snapshot["type"] == "snapshot"
        assert is_iso(snapshot["time"])
        assert abs(parse_instant(snapshot["time"]) - time.time()) < 60
        assert is_iso(snapshot["stats"]["generated_at"])
        for task in snapshot["tasks"]:
            check_task_times(task)
        assert any(t["id"] == finished["id"] for t in snapshot["tasks"])
        for worker in snapshot["workers"]:
            assert worker["last_heartbeat"] is None or is_iso(worker["last_heartbeat"])

        new = automation.add.delay(1, 2)
        deadline = time.monotonic() + 30
        delta = None
        while time.monotonic() < deadline and delta is None:
            message = json.loads(ws.recv())
            if message["type"] == "tasks" and any(t["id"] == new.id for t in message["tasks"]):
                delta = message
        assert delta is not None, "no delta for the new task"
        assert is_iso(delta["time"])
        for task in delta["tasks"]:
            check_task_times(task)

        ws.send(json.dumps({"type": "ping"}))
        deadline = time.monotonic() + 15
        pong = None
        while time.monotonic() < deadline and pong is None:
            message = json.loads(ws.recv())
            pong = message if message["type"] == "pong" else None
        assert pong is not None and is_iso(pong["time"])
    finally:
        ws.close()


@pytest.mark.parametrize("source", ["memory", "db"])
def test_since_and_until_without_an_offset_are_utc(stack: Stack, source: str) -> None:
    """The monitor runs with TZ=America/New_York: read as local time, the
    naive "a minute ago" would be five hours in the future."""
    from testing.apps import automation

    task = automation.add.delay(3, 4)
    stack.wait_state(task.id, "SUCCESS")
    stack.wait_status(task.id, "success")

    def ids(**params: str) -> list[str]:
        page = stack.get_json("/tasks", source=source, limit=1000, **params)
        return [t["id"] for t in page["tasks"]]

    minute = timedelta(minutes=1)
    assert task.id in ids(since=naive_utc(-minute))
    assert task.id not in ids(since=naive_utc(minute))
    assert task.id in ids(until=naive_utc(minute))
    assert task.id not in ids(until=naive_utc(-minute))
    assert task.id in ids(since=naive_utc(-minute), until=naive_utc(minute))
    # with a Z or an offset it is converted: the same instants, other spellings
    assert task.id in ids(since=naive_utc(-minute) + "Z")
    ahead = (datetime.now(timezone.utc) - minute).astimezone(timezone(timedelta(hours=5)))
    assert task.id in ids(since=ahead.isoformat(timespec="milliseconds"))
    later = (datetime.now(timezone.utc) + minute).astimezone(timezone(timedelta(hours=-8)))
    assert task.id not in ids(since=later.isoformat(timespec="milliseconds"))
    # epoch seconds are still read
    assert task.id in ids(since=str(time.time() - 60))
    # a time shown by the API, used as since, includes its own task
    sent = stack.task(task.id)["sent"]
    assert task.id in ids(since=sent)


@pytest.mark.parametrize("name, value", [
    ("since", "garbage"), ("until", "garbage"), ("since", "2026-13-45T99:00:00"),
    ("since", "nan"), ("until", "10:00"),
])
def test_a_bad_time_is_a_json_400_naming_the_parameter(stack: Stack, name: str,
                                                       value: str) -> None:
    response = stack.get("/tasks", **{name: value})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["detail"]["parameter"] == name and name in body["error"]


def test_audit_entries_say_their_time_in_iso(stack: Stack) -> None:
    from testing.apps import automation

    running = automation.sleep.delay(30)
    stack.wait_state(running.id, "STARTED")
    answer = stack.post(f"/tasks/{running.id}/cancel", {})
    assert answer.status_code in (200, 202), answer.text
    entries = stack.get_json("/audit", task_id=running.id)["entries"]
    assert entries and all(is_iso(e["timestamp"]) for e in entries)
    assert abs(parse_instant(entries[0]["timestamp"]) - time.time()) < 120
    stack.wait_state(running.id, "REVOKED")
    check_task_times(stack.task(running.id))
    assert is_iso(stack.task(running.id)["revoked"])
