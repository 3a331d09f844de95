"""``GET /series`` and ``GET /task-names``: the console's charts and task-name
table, kept by the monitor and persisted through PostgreSQL.

The recorder's bounds and minute arithmetic are checked in memory (a fake
clock); the rest on a real stack (worker, monitor, sync worker, PostgreSQL):
finished tasks in their minute, a parked queue's depth, runtime percentiles,
the task-name table, and the same minutes again from PostgreSQL after the
monitor restarts.
"""
from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from flower_ops.core.times import iso_utc, parse_instant
from flower_ops.monitor.services.insights import InsightsService
from flower_ops.monitor.services.series import (
    MAX_NAMES,
    MAX_QUEUES,
    MINUTES,
    SAMPLES_PER_MINUTE,
    SeriesRecorder,
)
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

T0 = 1_800_000_000.0   # a minute boundary (2027-01-15T08:00:00Z)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NoIndex:
    def sync(self) -> set[str]:
        return set()


def memory_service(recorder: SeriesRecorder) -> InsightsService:
    return InsightsService(recorder=recorder, index=NoIndex(),  # type: ignore[arg-type]
                           insights=None, run_blocking=None)  # type: ignore[arg-type]


# -- the recorder, in memory ----------------------------------------------------------


def test_the_recorder_stays_bounded_whatever_the_load() -> None:
    clock = Clock(T0)
    tracemalloc.start()
    recorder = SeriesRecorder(clock=clock)
    # a few busy names, and a flood of names that run once each, over a day
    for minute in range(0, MINUTES + 120, 37):
        at = T0 + minute * 60
        clock.now = at
        for busy in range(5):
            for i in range(30):
                recorder.record(name=f"busy.{busy}", task_id=f"b{minute}-{busy}-{i}", at=at,
                                failed=i % 10 == 0, runtime=0.1 * (i + 1))
        for once in range(40):
            recorder.record(name=f"once.{minute}.{once}", task_id=f"o{minute}-{once}",
                            at=at + 1, failed=False, runtime=1.0)
        recorder.sample_queues({f"q{minute}.{n}": n for n in range(50)}, at)
    assert len(recorder.names) <= MAX_NAMES
    assert {f"busy.{b}" for b in range(5)} <= set(recorder.names), "the most active stay"
    assert len(recorder.queues) <= MAX_QUEUES
    assert all(len(s.open_samples) <= SAMPLES_PER_MINUTE for s in recorder.names.values())
    assert recorder.memory_bytes() < 20 * 1024 * 1024
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 24 * 1024 * 1024, held
    # a minute's samples past the cap: a uniform sample, still bounded
    for i in range(5 * SAMPLES_PER_MINUTE):
        recorder.record(name="busy.0", task_id=f"x{i}", at=clock.now + 2, failed=False,
                        runtime=float(i % 100))
    assert len(recorder.names["busy.0"].open_samples) == SAMPLES_PER_MINUTE


def test_minutes_counts_and_percentiles_in_memory() -> None:
    clock = Clock(T0 - 30)
    recorder = SeriesRecorder(clock=clock)
    assert recorder.first_minute * 60 == T0
    clock.now = T0 + 10
    for i, runtime in enumerate((0.1, 0.2, 0.3, 0.4, 2.0)):
        recorder.record(name="a", task_id=f"a{i}", at=T0 + 5, failed=False, runtime=runtime)
    clock.now = T0 + 130
    recorder.record(name="a", task_id="bad", at=T0 + 70, failed=True, runtime=None,
                    exception="ValueError('x')")
    recorder.record(name="b", task_id="b1", at=T0 + 130, failed=False, runtime=1.5)
    recorder.sample_queues({"parked": 3}, T0 + 10)
    recorder.sample_queues({"parked": 4}, T0 + 50)
    clock.now = T0 + 190
    answer = asyncio.run(memory_service(recorder).series(T0 - 60, T0 + 190, None, None))
    assert answer["minutes"] == [iso_utc(T0 + 60 * k) for k in range(-1, 4)]
    assert answer["completed"] == [0, 5, 0, 1, 0]
    assert answer["failed"] == [0, 0, 1, 0, 0]
    assert answer["queues"] == {"parked": [None, 4, None, None, None]}
    assert answer["runtime"]["a"] == {"p50": [None, 0.3, None, None, None],
                                      "p95": [None, 2.0, None, None, None]}
    assert answer["runtime"]["b"]["p50"] == [None, None, None, 1.5, None]
    assert answer["source"] == "memory" and answer["memory_since"] == iso_utc(T0)
    table = asyncio.run(memory_service(recorder).task_names(T0, T0 + 190, "runs", 10))
    a, b = table["names"]
    assert (a["name"], a["runs"], a["succeeded"], a["failed"]) == ("a", 6, 5, 1)
    assert a["failure_rate"] == round(1 / 6, 4) and a["p50"] == 0.3
    assert a["last_failure"] == {"id": "bad", "at": iso_utc(T0 + 70),
                                 "exception": "ValueError('x')"}
    assert (b["name"], b["runs"], b["last_failure"]) == ("b", 1, None)
    by_name = asyncio.run(memory_service(recorder).task_names(T0, T0 + 190, "name", 1))
    assert [row["name"] for row in by_name["names"]] == ["a"]
    # a worker clock an hour ahead: counted now, not in a future slot
    recorder.record(name="a", task_id="ahead", at=T0 + 3790, failed=False, runtime=0.5)
    assert recorder.counts(int((T0 + 190) // 60)) == (1, 0)


# -- the real stack -------------------------------------------------------------------


MONITOR_ENV = {**FAST_MONITOR_REFRESH, "FLOWER_OPS_QUEUES": "parked"}


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name), monitor_env=MONITOR_ENV,
                           sync_env=FAST_SYNC_WORKER) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


@dataclass
class Ran:
    ok: list[str]
    failed: list[str]
    slow: list[str]


def run_batch(stack: Stack) -> Ran:
    from testing.apps import automation

    ok = [automation.add.delay(i, 1) for i in range(3)]
    failed = [automation.fail.delay(f"kaput {i}") for i in range(2)]
    slow = [automation.sleep.delay(s) for s in (0.2, 0.4)]
    for result in ok + slow:
        stack.wait_state(result.id, "SUCCESS")
    for result in failed:
        stack.wait_state(result.id, "FAILURE")
    for result in ok + slow:
        stack.wait_status(result.id, "success")
    for result in failed:
        stack.wait_status(result.id, "failure")
    return Ran(ok=[r.id for r in ok], failed=[r.id for r in failed],
               slow=[r.id for r in slow])


def finished_minute(stack: Stack, task_id: str) -> str:
    task = stack.task(task_id)
    at = parse_instant(task["succeeded"] or task["failed"])
    return iso_utc(at // 60 * 60) or ""


def totals_by_minute(answer: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {minute: (ok, bad) for minute, ok, bad in
            zip(answer["minutes"], answer["completed"], answer["failed"], strict=True)
            if ok or bad}


def expected_by_minute(stack: Stack, ran: list[Ran]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for batch in ran:
        for task_id in batch.ok + batch.slow:
            out.setdefault(finished_minute(stack, task_id), [0, 0])[0] += 1
        for task_id in batch.failed:
            out.setdefault(finished_minute(stack, task_id), [0, 0])[1] += 1
    return {minute: (ok, bad) for minute, (ok, bad) in out.items()}


def test_series_and_task_names_persist_across_a_monitor_restart(stack: Stack) -> None:
    from testing.apps import automation

    started = time.time()
    for i in range(3):
        automation.echo.apply_async(("parked", i), queue="parked")
    first = run_batch(stack)    # in the monitor's start minute: answered by PostgreSQL
    memory_since = parse_instant(stack.get_json("/series")["memory_since"])
    wait_for(lambda: time.time() >= memory_since + 1, timeout_seconds=75,
             message="the monitor's first whole minute")
    second = run_batch(stack)   # answered by memory
    since = iso_utc(started - 60)

    before = stack.get_json("/series", since=since)
    assert before["source"] == "memory+db"
    assert len(before["minutes"]) == len(before["completed"]) == len(before["failed"])
    steps = {parse_instant(b) - parse_instant(a)
             for a, b in zip(before["minutes"], before["minutes"][1:], strict=False)}
    assert steps == {60.0}, "contiguous minutes"
    expected = expected_by_minute(stack, [first, second])
    assert totals_by_minute(before) == expected
    depths = [d for d in before["queues"]["parked"] if d is not None]
    assert depths and depths[-1] == 3, before["queues"]
    sleep_p50 = [v for v in before["runtime"]["automation.sleep"]["p50"] if v is not None]
    sleep_p95 = [v for v in before["runtime"]["automation.sleep"]["p95"] if v is not None]
    assert sleep_p50 and all(0.15 <= v <= 1.5 for v in sleep_p50 + sleep_p95)
    assert set(before["runtime"]) >= {"automation.add", "automation.sleep"}
    only = stack.get_json("/series", since=since, names="automation.sleep", queues="parked")
    assert set(only["runtime"]) == {"automation.sleep"} and set(only["queues"]) == {"parked"}

    table = stack.get_json("/task-names")
    assert table["source"] == "db"
    check_table(table, [first, second])
    recent = stack.get_json("/task-names", since=iso_utc(memory_since))
    assert recent["source"] == "memory"
    check_table(recent, [second])

    stack.restart_monitor()     # memory empty: the same minutes from PostgreSQL
    after = stack.get_json("/series", since=since, until=before["until"])
    assert after["source"] == "memory+db"
    assert after["minutes"] == before["minutes"]
    assert totals_by_minute(after) == expected
    for name in ("automation.add", "automation.sleep"):
        stored = [v for v in after["runtime"][name]["p50"] if v is not None]
        assert stored, f"runtimes of {name} from PostgreSQL"
    assert [v for v in after["runtime"]["automation.sleep"]["p95"] if v is not None]
    check_table(stack.get_json("/task-names", since=since), [first, second])


def check_table(table: dict[str, Any], ran: list[Ran]) -> None:
    rows = {row["name"]: row for row in table["names"]}
    runs = [row["runs"] for row in table["names"]]
    assert runs == sorted(runs, reverse=True), "runs, most first"
    add, fail, sleep = rows["automation.add"], rows["automation.fail"], rows["automation.sleep"]
    assert (add["runs"], add["failed"], add["failure_rate"]) == (3 * len(ran), 0, 0.0)
    assert add["last_failure"] is None and add["p50"] is not None
    assert (fail["runs"], fail["failed"], fail["failure_rate"]) == (2 * len(ran), 2 * len(ran),
                                                                   1.0)
    assert fail["last_failure"]["id"] in ran[-1].failed
    assert "kaput" in (fail["last_failure"]["exception"] or "")
    assert sleep["p99"] is not None and 0.15 <= sleep["p99"] <= 1.5


@pytest.mark.parametrize(("path", "params", "parameter"), [
    ("/series", {"since": "yesterday"}, "since"),
    ("/series", {"until": "2026-13-01"}, "until"),
    ("/series", {"since": "2026-11-01T00:00:00Z", "until": "2026-11-09T00:00:00Z"}, "since"),
    ("/series", {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
    ("/series", {"names": ",".join(f"n{i}" for i in range(51))}, "names"),
    ("/task-names", {"limit": "0"}, "limit"),
    ("/task-names", {"limit": "1001"}, "limit"),
    ("/task-names", {"sort": "bogus"}, "sort"),
    ("/task-names", {"since": "not a time"}, "since"),
])
def test_bad_parameters_are_400s_naming_them(stack: Stack, path: str, params: dict[str, str],
                                            parameter: str) -> None:
    response = stack.get(path, **params)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["parameter"] == parameter


def test_unknown_parameters_and_tokens(stack: Stack) -> None:
    for path in ("/series", "/task-names"):
        response = stack.get(path, bogus="1")
        assert response.status_code == 400
        assert response.json()["detail"]["unknown"] == ["bogus"]
        assert requests.get(f"{stack.api}{path}", timeout=10).status_code == 401
    seven_days = stack.get_json("/series", since="2026-11-01T00:00:00Z",
                                until="2026-11-08T00:00:00Z")
    assert len(seven_days["minutes"]) == 10_080
