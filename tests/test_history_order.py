"""A task's history reads in lifecycle order — PENDING, RECEIVED, STARTED,
then the outcome, attempt after attempt — whatever the clocks of publisher
and worker say, and each step keeps the time it was reported: from Flower's
memory, from PostgreSQL, and merged. Flower's own ``EventsState`` fed real
Celery event dicts; rows in a real PostgreSQL; and crafted events through
Redis to a real monitor and sync worker."""
from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from celery.events import Event
from flower.events import EventsState

from flower_ops.core.lifecycle import in_lifecycle_order
from flower_ops.core.times import iso, iso_utc
from flower_ops.db.history import PgHistory
from flower_ops.db.pool import Database
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.sources.task_index import TaskIndex
from testing.events import T0, feed, task_events
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

AHEAD_SECONDS = 30.0
"""How far the publisher's clock runs ahead of the worker's."""


def steps(history: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(state, time) of each step, the time as the API says it: ISO 8601 UTC
    with milliseconds (``PgHistory`` itself keeps epoch seconds)."""
    return [(step["state"], iso(step["timestamp"])) for step in history]


def at_iso(expected: list[tuple[str, float]]) -> list[tuple[str, str | None]]:
    return [(state, iso_utc(ts)) for state, ts in expected]


def retried_task_events(uuid_: str, at: float, *, ahead: float) -> list[dict[str, Any]]:
    """A task that fails once and succeeds on its second attempt, published by
    a client whose clock reads ``ahead`` seconds later than the worker's, in
    the order the events are sent. ``Task.retry`` publishes the next attempt
    (from the worker) a moment before the worker reports the RETRY."""
    common = {"uuid": uuid_, "name": "job", "args": "(1, 2)", "kwargs": "{}"}
    worker = {"hostname": "w1@host"}
    events = [
        Event("task-sent", **common, retries=0, queue="celery", routing_key="celery",
              hostname="client@host", timestamp=at + ahead),
        Event("task-received", **common, retries=0, **worker, timestamp=at + 0.1),
        Event("task-started", uuid=uuid_, **worker, timestamp=at + 0.2),
        Event("task-sent", **common, retries=1, queue="celery", routing_key="celery",
              hostname="w1@host", timestamp=at + 0.5),
        Event("task-retried", uuid=uuid_, exception="RuntimeError('again')", **worker,
              timestamp=at + 0.55),
        Event("task-received", **common, retries=1, **worker, timestamp=at + 0.8),
        Event("task-started", uuid=uuid_, **worker, timestamp=at + 0.9),
        Event("task-succeeded", uuid=uuid_, result="3", runtime=0.1, **worker,
              timestamp=at + 1.0),
    ]
    for clock, event in enumerate(events, start=1):   # as a receiver adds them
        event.update(clock=clock, local_received=event["timestamp"])
    return events


def memory_service(state: EventsState,
                   history: PgHistory | None = None) -> TaskQueryService:
    def run_blocking(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    return TaskQueryService(index=TaskIndex(state), history=history, run_blocking=run_blocking)


# -- the rule ------------------------------------------------------------------------


def test_lifecycle_order_puts_each_attempt_in_stage_order_whatever_the_input_order() -> None:
    at = T0
    ordered = [  # what the database holds for retried_task_events (detail: retries)
        {"state": "PENDING", "timestamp": at + AHEAD_SECONDS, "retries": 0},
        {"state": "RECEIVED", "timestamp": at + 0.1, "retries": 0},
        {"state": "STARTED", "timestamp": at + 0.2},
        {"state": "RETRY", "timestamp": at + 0.55},
        {"state": "PENDING", "timestamp": at + 0.5, "retries": 1},
        {"state": "RECEIVED", "timestamp": at + 0.8, "retries": 1},
        {"state": "STARTED", "timestamp": at + 0.9},
        {"state": "SUCCESS", "timestamp": at + 1.0},
    ]
    rng = random.Random(7)
    for _ in range(20):
        shuffled = rng.sample(ordered, len(ordered))
        assert in_lifecycle_order(shuffled) == ordered

    # No attempt numbers (Flower's memory): a PENDING is the publish
    plain = [{"state": "RECEIVED", "timestamp": at + 0.1},
             {"state": "STARTED", "timestamp": at + 0.2},
             {"state": "FAILURE", "timestamp": at + 0.3},
             {"state": "PENDING", "timestamp": at + 9}]
    assert [s["state"] for s in in_lifecycle_order(plain)] == [
        "PENDING", "RECEIVED", "STARTED", "FAILURE"]
    # Outcomes of one attempt by time: a worker-lost FAILURE, then the real end
    ends = [{"state": "SUCCESS", "timestamp": at + 5}, {"state": "FAILURE", "timestamp": at + 4},
            {"state": "STARTED", "timestamp": at + 1}]
    assert [s["state"] for s in in_lifecycle_order(ends)] == ["STARTED", "FAILURE", "SUCCESS"]


# -- memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("sent_arrives", ["first", "last"])
def test_memory_history_starts_with_pending_when_the_publishers_clock_is_ahead(
        sent_arrives: str) -> None:
    state = EventsState(max_tasks_in_memory=100)
    service = memory_service(state)
    sent, *rest = task_events("ahead", name="job", final="SUCCESS", at=T0)
    sent["timestamp"] = T0 + AHEAD_SECONDS
    feed(state, [sent, *rest] if sent_arrives == "first" else [*rest, sent])

    detail = asyncio.run(service.get("ahead"))

    assert detail["source"] == "memory" and detail["state"] == "SUCCESS"
    assert steps(detail["history"]) == at_iso([
        ("PENDING", T0 + AHEAD_SECONDS), ("RECEIVED", T0 + 0.1),
        ("STARTED", T0 + 0.2), ("SUCCESS", T0 + 0.7)])
    assert detail["sent"] == iso_utc(T0 + AHEAD_SECONDS)      # the time it was reported


def test_memory_history_of_a_retried_task_keeps_each_latest_step_in_attempt_order() -> None:
    state = EventsState(max_tasks_in_memory=100)
    service = memory_service(state)
    feed(state, retried_task_events("again", T0, ahead=AHEAD_SECONDS))

    detail = asyncio.run(service.get("again"))

    # Flower keeps the latest time of each step: the second attempt's
    assert steps(detail["history"]) == at_iso([
        ("PENDING", T0 + 0.5), ("RETRY", T0 + 0.55), ("RECEIVED", T0 + 0.8),
        ("STARTED", T0 + 0.9), ("SUCCESS", T0 + 1.0)])


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def history(database_url: str) -> Iterator[PgHistory]:
    database = Database(url=database_url, application_name="test-history-order")
    database.open()
    try:
        yield PgHistory(database)
    finally:
        database.close()


def insert(database_url: str, task_id: str, rows: list[tuple[str, float, dict[str, Any] | None]]
           ) -> None:
    """The execution row and its history rows, inserted in the order given."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO automation.job_executions (execution_id, task_name, status, "
            "first_seen_at, first_seen_day) VALUES (%s, 'job', 'success', to_timestamp(%s), "
            "(now() AT TIME ZONE 'UTC')::date)",
            (task_id, min(at for _, at, _ in rows)))
        for state, at, detail in rows:
            conn.execute(
                "INSERT INTO automation.job_execution_history (execution_id, state, "
                "occurred_at, worker, detail, first_seen_day) SELECT %s, %s, to_timestamp(%s), "
                "'w1@host', %s, first_seen_day FROM automation.job_executions "
                "WHERE execution_id = %s",
                (task_id, state, at, psycopg.types.json.Jsonb(detail) if detail else None,
                 task_id))


def test_database_history_is_in_lifecycle_order_whatever_the_clocks(
        history: PgHistory, database_url: str) -> None:
    at = T0
    insert(database_url, "ahead", [   # newest first: the worst order to read them in
        ("SUCCESS", at + 0.7, None), ("STARTED", at + 0.2, None),
        ("RECEIVED", at + 0.1, {"retries": 0}), ("PENDING", at + AHEAD_SECONDS, {"retries": 0})])
    insert(database_url, "again", [
        ("PENDING", at + AHEAD_SECONDS, {"retries": 0}), ("SUCCESS", at + 1.0, None),
        ("RECEIVED", at + 0.8, {"retries": 1}), ("RETRY", at + 0.55, {"error": "again"}),
        ("STARTED", at + 0.9, None), ("PENDING", at + 0.5, {"retries": 1}),
        ("STARTED", at + 0.2, None), ("RECEIVED", at + 0.1, {"retries": 0})])

    ahead = history.get_task("ahead")
    assert ahead is not None
    assert steps(ahead["history"]) == at_iso([
        ("PENDING", at + AHEAD_SECONDS), ("RECEIVED", at + 0.1),
        ("STARTED", at + 0.2), ("SUCCESS", at + 0.7)])
    again = history.get_task("again")
    assert again is not None
    assert steps(again["history"]) == at_iso([
        ("PENDING", at + AHEAD_SECONDS), ("RECEIVED", at + 0.1), ("STARTED", at + 0.2),
        ("RETRY", at + 0.55), ("PENDING", at + 0.5), ("RECEIVED", at + 0.8),
        ("STARTED", at + 0.9), ("SUCCESS", at + 1.0)])
    assert again["history"][3]["error"] == "again"       # each step keeps its detail


def test_merged_history_adds_what_only_memory_knows_in_lifecycle_order(
        history: PgHistory, database_url: str) -> None:
    """The sync worker has written PENDING and RECEIVED; memory already knows
    the task started and succeeded."""
    at = T0
    insert(database_url, "merged", [("RECEIVED", at + 0.1, {"retries": 0}),
                                    ("PENDING", at + AHEAD_SECONDS, {"retries": 0})])
    state = EventsState(max_tasks_in_memory=100)
    service = memory_service(state, history)
    sent, *rest = task_events("merged", name="job", final="SUCCESS", at=at)
    sent["timestamp"] = at + AHEAD_SECONDS
    feed(state, [*rest, sent])

    detail = asyncio.run(service.get("merged"))

    assert detail["source"] == "memory+db"
    assert steps(detail["history"]) == at_iso([
        ("PENDING", at + AHEAD_SECONDS), ("RECEIVED", at + 0.1),
        ("STARTED", at + 0.2), ("SUCCESS", at + 0.7)])
    assert detail["history"][0].get("retries") == 0       # the database's step, not a copy


# -- end to end: crafted events through Redis to the monitor and the sync worker ----------


@pytest.fixture
def stack(redis_url: str, database_url: str) -> Iterator[Stack]:
    with running_stack(broker_url=redis_url, database_url=database_url,
                       monitor_env=FAST_MONITOR_REFRESH, sync_env=FAST_SYNC_WORKER) as stack:
        yield stack


def send_events(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Publish ``events`` as their hosts would, each with its own timestamp."""
    dispatchers: dict[str, Any] = {}
    with stack.app.connection_for_write() as conn:
        try:
            for event in events:
                fields = dict(event)
                kind, host = fields.pop("type"), fields.pop("hostname")
                for added_by_receiver in ("clock", "local_received"):
                    fields.pop(added_by_receiver)
                dispatcher = dispatchers.get(host)
                if dispatcher is None:
                    dispatcher = dispatchers[host] = stack.app.events.Dispatcher(
                        conn, hostname=host, enabled=True)
                dispatcher.send(kind, **fields)
        finally:
            for dispatcher in dispatchers.values():
                dispatcher.close()


def test_every_view_reads_lifecycle_order_when_the_publishers_clock_is_ahead(
        stack: Stack, database_url: str) -> None:
    task_id = f"ahead-{uuid.uuid4()}"
    at = round(time.time(), 3)     # milliseconds: PostgreSQL keeps microseconds
    send_events(stack, retried_task_events(task_id, at, ahead=AHEAD_SECONDS))
    expected = [("PENDING", at + AHEAD_SECONDS), ("RECEIVED", at + 0.1), ("STARTED", at + 0.2),
                ("RETRY", at + 0.55), ("PENDING", at + 0.5), ("RECEIVED", at + 0.8),
                ("STARTED", at + 0.9), ("SUCCESS", at + 1.0)]
    expected = at_iso(expected)

    def written() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM automation.job_execution_history "
                               "WHERE execution_id = %s", (task_id,)).fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: written() == len(expected), timeout_seconds=30,
             message="the sync worker wrote every step")
    detail = stack.wait_state(task_id, "SUCCESS")
    assert detail["source"] == "memory+db"
    assert steps(detail["history"]) == expected

    stack.restart_monitor()                               # memory empty: PostgreSQL answers
    stored = stack.task(task_id)
    assert stored["source"] == "db"
    assert steps(stored["history"]) == expected
    assert [step.get("retries") for step in stored["history"] if step["state"] == "RECEIVED"] \
        == [0, 1]
