"""Cancel tells the truth: a queued task's cancel is visible everywhere at
once, and a cancel that loses the race with the task's end says so (409 with
the real state), in the answer, the audit record, Flower's memory,
PostgreSQL and the live feed alike. Real worker, monitor, sync worker, Redis
and PostgreSQL."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import websocket

from flower_ops.core.lifecycle import FINAL_STATES, STATE_TO_STATUS
from testing.services import PostgresService, RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

RACE_TASKS = 120
MONITOR_ENV = {"FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "2",
               "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
               "FLOWER_OPS_CANCEL_CONFIRM_SECONDS": "3"}
SYNC_ENV = {"FLOWER_OPS_SYNC_METRICS_PORT": "0", "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.1"}


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name), monitor_env=MONITOR_ENV,
                           sync_env=SYNC_ENV, concurrency=4) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


class FeedWatcher:
    """A live-feed client that remembers the last state it was told of each task."""

    def __init__(self, stack: Stack) -> None:
        self.ws = websocket.create_connection(stack.monitor.ws_url, timeout=10,
                                              suppress_origin=True,
                                              header=[f"Authorization: Bearer {stack.token}"])
        self.states: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.ws.settimeout(0.5)
        while not self._stop.is_set():
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            if not raw:   # closed
                return
            message = json.loads(raw)
            for task in message.get("tasks") or ():
                if isinstance(task, dict) and task.get("state"):
                    self.states[task["id"]] = task["state"]

    def close(self) -> None:
        self._stop.set()
        self.ws.close()
        self._thread.join(5)


def queue_length(stack: Stack, queue: str) -> int:
    return int(redis.Redis.from_url(stack.broker_url).llen(queue))


def listed(stack: Stack, **params: Any) -> dict[str, str]:
    body = stack.get_json("/tasks", limit=1000, **params)
    return {task["id"]: task["state"] for task in body["tasks"]}


def test_cancel_of_a_queued_task_is_revoked_everywhere_at_once(stack: Stack) -> None:
    from testing.apps import automation

    queued = automation.add.apply_async((1, 2), queue="archive")   # nobody consumes it
    stack.wait_state(queued.id, "PENDING")
    wait_for(lambda: queue_length(stack, "archive") == 1, message="the message queued")
    wait_for(lambda: next((q["messages"] for q in stack.get_json("/queues")["queues"]
                           if q["name"] == "archive"), None) == 1, message="/queues sees it")
    feed = FeedWatcher(stack)
    try:
        response = stack.post(f"/tasks/{queued.id}/cancel")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["outcome"], body["state"]) == ("cancelled", "REVOKED")
        # from the answer on, every view says REVOKED
        assert listed(stack, queue="archive")[queued.id] == "REVOKED"
        assert queued.id in listed(stack, state="REVOKED")
        assert queued.id not in listed(stack, state="PENDING")
        assert stack.task(queued.id)["state"] == "REVOKED"
        assert stack.row(queued.id)["status"] == "cancelled"  # type: ignore[index]
        assert queue_length(stack, "archive") == 0       # the message left the queue
        wait_for(lambda: next((q["messages"] for q in stack.get_json("/queues")["queues"]
                               if q["name"] == "archive"), None) == 0,
                 message="the backlog drops")
        wait_for(lambda: feed.states.get(queued.id) == "REVOKED", timeout_seconds=10,
                 message="the feed says REVOKED")
    finally:
        feed.close()
    again = stack.post(f"/tasks/{queued.id}/cancel")
    assert again.status_code == 409 and again.json()["detail"]["state"] == "REVOKED"
    assert [a for a in stack.audit(queued.id) if a[1] == "cancel"] == [
        ("admin", "cancel", "cancelled"), ("admin", "cancel", "rejected")]


def _cancel_around_its_end(stack: Stack, rng: random.Random) -> dict[str, Any]:
    from testing.apps import automation

    duration = rng.uniform(0.05, 0.4)
    task = automation.sleep.delay(duration)
    wait_for(lambda: stack.get(f"/tasks/{task.id}").status_code == 200, timeout_seconds=30,
             interval_seconds=0.02, message=f"task {task.id} known")
    time.sleep(rng.uniform(0.0, duration + 0.3))
    response = stack.post(f"/tasks/{task.id}/cancel")
    return {"id": task.id, "status": response.status_code, "body": response.json()}


def test_cancels_racing_the_tasks_end_answer_what_happened(stack: Stack) -> None:
    rng = random.Random(20261130)
    feed = FeedWatcher(stack)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda seed: _cancel_around_its_end(
                stack, random.Random(seed)), [rng.random() for _ in range(RACE_TASKS)]))

        def settled() -> bool:
            for answer in answers:
                task = stack.task(answer["id"])
                row = stack.row(answer["id"])
                if task["state"] not in FINAL_STATES or row is None or \
                        row["status"] != STATE_TO_STATUS[task["state"]]:
                    return False
            return True
        wait_for(settled, timeout_seconds=90, interval_seconds=0.5,
                 message="every task final in memory and PostgreSQL")
        time.sleep(2.0)   # the feed's last flush and snapshot
    finally:
        feed.close()

    cases: Counter[str] = Counter()
    for answer in answers:
        task_id, body = answer["id"], answer["body"]
        memory = stack.task(task_id)
        row = stack.row(task_id)
        assert row is not None
        audit = [a for a in stack.audit(task_id) if a[1] == "cancel"]
        if answer["status"] == 200:
            cases["200 cancelled"] += 1
            assert body["outcome"] == "cancelled" and body["state"] == "REVOKED", answer
            final = "REVOKED"
            assert audit == [("admin", "cancel", "cancelled")], (answer, audit)
        elif answer["status"] == 409:
            final = body["detail"]["state"]
            cases[f"409 {final}"] += 1
            assert final in FINAL_STATES - {"REVOKED"}, answer
            assert audit == [("admin", "cancel", "rejected")], (answer, audit)
        elif answer["status"] == 202:
            cases["202 requested"] += 1
            assert body["outcome"] == "requested", answer
            final = memory["state"]
            assert audit == [("admin", "cancel", "requested")], (answer, audit)
        else:
            raise AssertionError(f"unexpected answer {answer}")
        assert memory["state"] == final, (answer, memory["state"])
        assert row["status"] == STATE_TO_STATUS[final], (answer, row["status"])
        assert feed.states.get(task_id) == final, (answer, feed.states.get(task_id))
        finals_in_history = {h["state"] for h in memory["history"]} & FINAL_STATES
        assert finals_in_history <= {final}, (answer, memory["history"])
        # of the outcome timestamps only the outcome's own is shown
        others = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}
        assert all(memory[field] is None for state, field in others.items() if state != final)
    print(f"cancel race over {RACE_TASKS} tasks: " +
          ", ".join(f"{case}: {n}" for case, n in sorted(cases.items())))
    # the race was really run: both sides of it happened
    assert cases["200 cancelled"] > 0 and sum(n for c, n in cases.items()
                                              if c.startswith("409")) > 0, cases
