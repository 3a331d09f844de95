"""The monitor reads PostgreSQL history: tasks Flower evicted, or forgot across
a restart, are still found and listable. Real sync worker, Celery worker,
monitor, Redis and PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from testing.executions import statuses
from testing.processes import Monitor
from testing.stack import Stack, running_stack
from testing.waiting import wait_for


@pytest.fixture
def stack(redis_url: str, database_url: str) -> Iterator[Stack]:
    """Sync worker, Celery worker and a monitor that keeps only three tasks in memory."""
    with running_stack(broker_url=redis_url, database_url=database_url, monitor_env={},
                       monitor_args=["--max_tasks=3"],
                       sync_env={"FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.2"}) as stack:
        yield stack


def test_evicted_and_restarted_tasks_are_served_from_postgres(
        stack: Stack, redis_url: str, database_url: str) -> None:
    from testing.apps import automation

    env = {"DATABASE_URL": database_url}
    monitor = stack.monitor
    try:
        headers = stack.headers()
        first = automation.fail.delay("first-of-many")
        ids = [first.id] + [automation.add.delay(i, i).id for i in range(6)]
        for task_id in ids:
            wait_for(lambda: statuses(database_url, [task_id]).get(task_id)
                     in ("success", "failure"), message=f"row for {task_id}")

        # Flower keeps three tasks: once it has the last one, the first one
        # is gone from its memory (the monitor may read events later than
        # the sync worker wrote its rows: CI saw three tasks in memory, the
        # first among them, before the rest had come)
        def memory_ids() -> list[str]:
            response = requests.get(f"{monitor.api}/tasks", headers=headers, timeout=5,
                                    params={"source": "memory", "limit": 100})
            return [t["id"] for t in response.json()["tasks"]]

        wait_for(lambda: ids[-1] in memory_ids(), message="the monitor seeing the last task")
        held = memory_ids()
        assert len(held) <= 3 and first.id not in held, held
        detail = requests.get(f"{monitor.api}/tasks/{first.id}", headers=headers, timeout=5)
        assert detail.status_code == 200, detail.text
        task = detail.json()
        assert task["source"] == "db" and task["state"] == "FAILURE"
        assert task["name"] == "automation.fail" and task["args"] == ["first-of-many"]
        assert "first-of-many" in (task["exception"] or "")
        assert [step["state"] for step in task["history"]][-1] == "FAILURE"
        assert "STARTED" in [step["state"] for step in task["history"]]

        # The whole history pages from PostgreSQL with keyset cursors
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"source": "db", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = requests.get(f"{monitor.api}/tasks", headers=headers, params=params,
                                timeout=5).json()
            assert page["source"] == "db" and page["total"] == 7
            seen.extend(t["id"] for t in page["tasks"])
            cursor = page["next"]
            if not cursor:
                break
        assert sorted(seen) == sorted(ids)
        failures = requests.get(f"{monitor.api}/tasks", headers=headers, timeout=5,
                                params={"source": "db", "state": "FAILURE"}).json()
        assert [t["id"] for t in failures["tasks"]] == [first.id]
    finally:
        monitor.stop()

    # A new monitor process knows nothing in memory, and still answers
    fresh = Monitor(redis_url, env=env).start()
    try:
        fresh.wait_ready()
        headers = {"Authorization": f"Bearer {fresh.token()}"}
        response = requests.get(f"{fresh.api}/tasks/{ids[-1]}", headers=headers, timeout=5)
        assert response.status_code == 200 and response.json()["state"] == "SUCCESS"
        assert response.json()["result"] == 10
        missing = requests.get(f"{fresh.api}/tasks/not-a-task", headers=headers, timeout=5)
        assert missing.status_code == 404
    finally:
        fresh.stop()


def test_history_source_without_database_is_503(redis_url: str) -> None:
    monitor = Monitor(redis_url).start()
    try:
        monitor.wait_ready()
        response = requests.get(f"{monitor.api}/tasks", params={"source": "db"}, timeout=5,
                                headers={"Authorization": f"Bearer {monitor.token()}"})
        assert response.status_code == 503
        assert "DATABASE_URL" in response.json()["error"]
    finally:
        monitor.stop()
