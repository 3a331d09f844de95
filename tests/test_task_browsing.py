"""The console's task browser: ``GET /tasks?source=all`` (memory and
PostgreSQL history as one list), ``prev`` cursors (forward then back gives
the same pages), the filters the same across sources, and
``GET /tasks/counts``.

A real stack: a Celery worker, the sync worker flushing every 0.2 s, and a
monitor whose Flower keeps only five tasks in memory, so most of what was
sent is PostgreSQL history only.
"""
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from flower_ops.core.lifecycle import TASK_STATES
from testing.executions import statuses, wait_statuses
from testing.services import PostgresService, RedisService
from testing.settings import FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

SOURCES = ("memory", "db", "all")
MEMORY_TASKS = 5


@dataclass
class Sent:
    ids: list[str]          # in the order sent
    adds: list[str]
    fails: list[str]
    needles: list[str]
    parked: list[str]


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name), monitor_env={},
                           monitor_args=[f"--max_tasks={MEMORY_TASKS}"],
                           sync_env={**FAST_SYNC_WORKER,
                                     "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.2"}
                           ) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


@pytest.fixture(scope="module")
def sent(stack: Stack) -> Sent:
    from testing.apps import automation

    def spaced(result: Any) -> str:
        time.sleep(0.2)         # distinct first-seen times, a time window in between
        return str(result.id)

    adds = [spaced(automation.add.delay(i, i)) for i in range(3)]
    fails = [spaced(automation.fail.delay(f"kaput-{i}")) for i in range(2)]
    needles = [spaced(automation.echo.delay("needle-xyz", i)) for i in range(2)]
    parked = [spaced(automation.echo.apply_async(("parked", i), queue="parked"))
              for i in range(2)]
    adds += [spaced(automation.add.delay(i, 10)) for i in range(4)]
    ids = [*adds[:3], *fails, *needles, *parked, *adds[3:]]
    want = {**dict.fromkeys(adds + needles, "success"), **dict.fromkeys(fails, "failure"),
            **dict.fromkeys(parked, "pending")}
    database_url = stack.require_database_url()
    wait_statuses(database_url, want, timeout_seconds=90)

    def settled() -> bool:
        listing = stack.get_json("/tasks", source="memory", limit=100)
        return 0 < listing["total"] <= MEMORY_TASKS and all(
            t["state"] == want[t["id"]].upper()
            for t in listing["tasks"] if t["id"] in want)

    wait_for(settled, timeout_seconds=30, message="Flower keeping its last five tasks")
    return Sent(ids=ids, adds=adds, fails=fails, needles=needles, parked=parked)


def page(stack: Stack, source: str, **params: Any) -> dict[str, Any]:
    return dict(stack.get_json("/tasks", source=source, **params))


def everything(stack: Stack, source: str, **params: Any) -> list[dict[str, Any]]:
    """Every task a listing finds, one page of 1000."""
    listing = page(stack, source, limit=1000, **params)
    assert listing["next"] is None and listing["prev"] is None
    assert listing["total"] == len(listing["tasks"])
    return list(listing["tasks"])


def ids_of(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for t in tasks]


def walk(stack: Stack, source: str, order: str, limit: int, **filters: Any
         ) -> tuple[list[list[str]], list[list[str]]]:
    """Pages forward from the first (by ``next``), then back from the last (by ``prev``)."""
    params = {"order": order, "limit": limit, **filters}
    current = page(stack, source, **params)
    assert current["prev"] is None, "the first page has no prev"
    forward = [ids_of(current["tasks"])]
    while current["next"]:
        current = page(stack, source, cursor=current["next"], **params)
        assert current["source"] == source and current["prev"]
        forward.append(ids_of(current["tasks"]))
        assert len(forward) < 100
    back = [ids_of(current["tasks"])]
    while current["prev"]:
        current = page(stack, source, cursor=current["prev"], **params)
        assert current["next"], "a page before another has a next"
        back.append(ids_of(current["tasks"]))
        assert len(back) < 100
    return forward, back[::-1]


def test_all_pages_past_memory_into_history(stack: Stack, sent: Sent) -> None:
    memory = everything(stack, "memory")
    assert len(memory) <= MEMORY_TASKS < len(sent.ids)
    for order in ("desc", "asc"):
        forward, back = walk(stack, "all", order, 3)
        seen = [task_id for ids in forward for task_id in ids]
        assert len(seen) == len(set(seen)), "no task twice"
        assert set(seen) == set(sent.ids), "no task missing"
        expected = sent.ids[::-1] if order == "desc" else sent.ids
        assert seen == expected, "in the order sent"
        assert forward == back
    listing = page(stack, "all", limit=len(sent.ids))
    assert listing["source"] == "all" and listing["total"] == len(sent.ids)
    in_memory = set(ids_of(memory))
    for task in listing["tasks"]:
        assert task["source"] == ("memory+db" if task["id"] in in_memory else "db"), task


@pytest.mark.parametrize("source", SOURCES)
def test_forward_then_back_gives_the_same_pages(stack: Stack, sent: Sent, source: str) -> None:
    for order in ("desc", "asc"):
        for limit, filters in ((2, {}), (1, {"state": "SUCCESS"}), (4, {"name": "automation.*"})):
            forward, back = walk(stack, source, order, limit, **filters)
            assert forward == back, (order, limit, filters)
            flat = [task_id for ids in forward for task_id in ids]
            assert flat == ids_of(everything(stack, source, order=order, **filters))


def before(instant: str) -> str:
    """50 ms before ``instant``: between two tasks sent 200 ms apart, whether a
    source knows a task from its sending (PostgreSQL) or, when Flower let the
    task-sent go with an evicted task, from its receipt by the worker."""
    at = datetime.strptime(instant, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(milliseconds=50)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def window(stack: Stack) -> tuple[str, str]:
    """since and until around the 4th to 9th tasks sent."""
    in_order = everything(stack, "db", order="asc")
    return before(in_order[3]["sent"]), before(in_order[9]["sent"])


def filter_cases(stack: Stack, sent: Sent) -> list[dict[str, str]]:
    since, until = window(stack)
    return [
        {}, {"state": "SUCCESS"}, {"state": "FAILURE,PENDING"}, {"name": "automation.add"},
        {"name": "automation.f*"}, {"name": "automation.e*", "state": "SUCCESS"},
        {"queue": "parked"}, {"worker": stack.worker.hostname},
        {"since": since}, {"until": until}, {"since": since, "until": until},
        {"search": "needle-xyz"}, {"search": "NEEDLE", "worker": stack.worker.hostname},
        {"search": "kaput-1"},
    ]


def test_filters_are_the_same_across_sources(stack: Stack, sent: Sent) -> None:
    in_memory = set(ids_of(everything(stack, "memory")))
    expected_sets = {
        "queue=parked": set(sent.parked), "search=needle-xyz": set(sent.needles),
        "name=automation.add": set(sent.adds), "state=FAILURE,PENDING":
            set(sent.fails + sent.parked), "search=kaput-1": {sent.fails[1]},
    }
    for filters in filter_cases(stack, sent):
        label = "&".join(f"{k}={v}" for k, v in filters.items())
        stored = ids_of(everything(stack, "db", **filters))
        both = ids_of(everything(stack, "all", **filters))
        memory = ids_of(everything(stack, "memory", **filters))
        assert both == stored, label
        assert memory == [task_id for task_id in stored if task_id in in_memory], label
        if label in expected_sets:
            assert set(stored) == expected_sets[label], label
    in_order = everything(stack, "db", order="asc")
    since, until = window(stack)
    assert ids_of(everything(stack, "all", order="asc", since=since, until=until)) == \
        ids_of(in_order[3:9])


def test_counts_per_state_match_the_listing(stack: Stack, sent: Sent) -> None:
    for source in SOURCES:
        for filters in filter_cases(stack, sent):
            others = {k: v for k, v in filters.items() if k != "state"}
            counts = stack.get_json("/tasks/counts", source=source, **filters)
            tasks = everything(stack, source, **others)
            found = Counter(t["state"] for t in tasks)
            assert counts["source"] == source
            assert counts["by_state"] == {s: found.get(s, 0) for s in TASK_STATES}, \
                (source, filters)
            assert counts["total"] == len(tasks) == sum(counts["by_state"].values())
    # every parameter of GET /tasks is taken; limit, cursor and order left aside
    plain = stack.get_json("/tasks/counts", source="all")
    assert plain == stack.get_json("/tasks/counts", source="all", state="SUCCESS", limit=1,
                                   order="asc")
    assert plain["total"] == len(sent.ids)
    assert stack.get_json("/tasks/counts")["source"] == "memory"


def test_refusals(stack: Stack, sent: Sent) -> None:
    db_next = page(stack, "db", limit=2)["next"]
    all_next = page(stack, "all", limit=2)["next"]
    memory_next = page(stack, "memory", limit=2)["next"]
    for source, cursor in (("memory", db_next), ("db", all_next), ("all", memory_next),
                           ("memory", all_next), ("all", db_next)):
        response = stack.get("/tasks", source=source, cursor=cursor)
        assert response.status_code == 400, (source, cursor, response.text)
        assert "cursor" in response.json()["error"]
    # without a source, a cursor says where it came from
    assert page(stack, "auto", cursor=db_next)["source"] == "db"
    for bad in ("zzz", "dx123", "an", "m-1", "an!!!"):
        assert stack.get("/tasks", source="all", cursor=bad).status_code == 400, bad
    response = stack.get("/tasks/counts", bogus="1", other="2")
    assert response.status_code == 400
    assert "bogus" in response.text and "other" in response.text
    assert stack.get("/tasks/counts", state="NOPE").status_code == 400
    assert stack.get("/tasks/counts", source="elsewhere").status_code == 400


def test_memory_is_fresher_than_the_rows(stack: Stack, sent: Sent) -> None:
    """With the sync worker paused, a task that ran is SUCCESS in memory
    while its row says STARTED, and a task sent after the pause has no row:
    source=all shows both as memory has them, at their place."""
    from testing.apps import automation

    sync = stack.require_sync()
    database_url = stack.require_database_url()
    slow = automation.sleep.delay(1.5)
    wait_for(lambda: statuses(database_url, [slow.id]).get(slow.id) == "started",
             timeout_seconds=30, message="the slow task's row STARTED")
    os.kill(sync.pid, signal.SIGSTOP)
    try:
        fresh = automation.add.delay(100, 1)
        for task_id in (slow.id, fresh.id):
            wait_for(lambda task_id=task_id: stack.task(task_id)["state"] == "SUCCESS",
                     timeout_seconds=30, message="SUCCESS in memory")
        assert statuses(database_url, [slow.id, fresh.id]) == {slow.id: "started"}
        first = page(stack, "all", limit=3)
        assert ids_of(first["tasks"])[:2] == [fresh.id, slow.id]
        assert [(t["state"], t["source"]) for t in first["tasks"][:2]] == \
            [("SUCCESS", "memory"), ("SUCCESS", "memory")]
        assert first["total"] == len(sent.ids) + 2
        assert ids_of(everything(stack, "all", state="STARTED")) == []
        successes = ids_of(everything(stack, "all", state="SUCCESS"))
        assert successes[:2] == [fresh.id, slow.id]
        counts = stack.get_json("/tasks/counts", source="all")
        assert counts["by_state"]["SUCCESS"] == len(successes)
        assert counts["by_state"]["STARTED"] == 0
        assert counts["total"] == len(sent.ids) + 2
        forward, back = walk(stack, "all", "desc", 2)
        assert forward == back
        assert [i for ids in forward for i in ids] == [fresh.id, slow.id, *sent.ids[::-1]]
        # the rows say otherwise: PostgreSQL alone
        assert fresh.id not in ids_of(everything(stack, "db"))
        assert ids_of(everything(stack, "db", state="STARTED")) == [slow.id]
    finally:
        os.kill(sync.pid, signal.SIGCONT)
    wait_for(lambda: statuses(database_url, [slow.id, fresh.id])
             == {slow.id: "success", fresh.id: "success"},
             timeout_seconds=30, message="the rows caught up")
    first = page(stack, "all", limit=2)
    assert ids_of(first["tasks"]) == [fresh.id, slow.id]
    assert [t["source"] for t in first["tasks"]] == ["memory+db", "memory+db"]
    assert first["total"] == len(sent.ids) + 2


def test_the_index_pages_back_and_counts_per_state_as_it_lists() -> None:
    """The memory side without a stack: 3,000 tasks in Flower's state,
    ``prev`` walks back over the same pages, and counts per state (bisects,
    one walk, or a bucket per state, by the filters) equal the listings'."""
    from flower.events import EventsState

    from flower_ops.core.query import TaskQuery
    from flower_ops.monitor.sources.task_index import TaskIndex
    from testing.events import T0, feed, task_events

    state = EventsState(max_tasks_in_memory=10_000)
    index = TaskIndex(state)
    for i in range(3000):
        feed(state, task_events(f"t{i}", name=f"job.{i % 4}", final=TASK_STATES[i % 7],
                                at=T0 + i * 0.01, worker=f"w{i % 3}@host",
                                queue="fast" if i % 5 == 0 else "celery"))
    index.sync()
    some = {f"t{i}" for i in range(0, 3000, 7)}
    cases: list[tuple[TaskQuery, set[str] | None]] = [
        (TaskQuery(), None), (TaskQuery(worker="w1@host"), None),
        (TaskQuery(worker="w1@host", queue="fast"), None), (TaskQuery(name="job.*"), None),
        (TaskQuery(name="job.1"), None), (TaskQuery(since=T0 + 3, until=T0 + 9), None),
        (TaskQuery(states=frozenset({"SUCCESS", "RETRY"}), queue="fast"), None),
        (TaskQuery(), some), (TaskQuery(name="job.2*", since=T0 + 5), some),
        (TaskQuery(name="none"), None),
    ]
    for base, candidates in cases:
        everything_ids, _, _ = index.query(replace(base, limit=10_000), candidates=candidates)
        found = Counter(state.tasks.data[i].state for i in index.query(
            replace(base, states=frozenset(), limit=10_000), candidates=candidates)[0])
        counts = index.count_by_state(base, candidates=candidates)
        assert {s: n for s, n in counts.items() if n} == dict(found), base
        for order in ("desc", "asc"):
            query = replace(base, limit=97, order=order)
            pages = []
            ids, _, next_key, prev_key = index.page(query, candidates=candidates)
            assert prev_key is None
            pages.append(ids)
            while next_key:
                ids, _, next_key, prev_key = index.page(replace(query, cursor=next_key),
                                                        candidates=candidates)
                pages.append(ids)
            back = [ids]
            while prev_key:
                ids, _, _, prev_key = index.page(replace(query, cursor=prev_key, backward=True),
                                                 candidates=candidates)
                back.append(ids)
            assert back[::-1] == pages, (base, order)
            flat = [i for ids in pages for i in ids]
            expected = everything_ids if order == "desc" else everything_ids[::-1]
            assert flat == expected
