"""The monitor reads PostgreSQL history: tasks Flower evicted, or forgot across
a restart, are still found and listable. Real sync worker, Celery worker,
monitor, Redis and PostgreSQL."""
from __future__ import annotations

import os
import sys
from typing import Any, Iterator

import psycopg
import pytest
import requests

from tests.support.processes import CeleryWorker, Monitor, _Process, wait_for


class SyncWorker(_Process):
    def __init__(self, broker_url: str, database_url: str) -> None:
        super().__init__([sys.executable, "-m", "sync_worker"],
                         {"REDIS_URL": broker_url, "DATABASE_URL": database_url,
                          "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.2"}, "sync-worker")


def row_status(database_url: str, task_id: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM automation.job_executions WHERE execution_id = %s",
                           (task_id,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def services(redis_url: str, database_url: str) -> Iterator[dict[str, Any]]:
    os.environ["REDIS_URL"] = redis_url
    from tests.apps import automation

    automation.app.conf.broker_url = redis_url
    automation.app.conf.result_backend = redis_url
    sync = SyncWorker(redis_url, database_url).start()
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(automation.app)
        yield {"app": automation.app, "sync": sync, "worker": worker}
    finally:
        worker.stop()
        sync.stop()


def test_evicted_and_restarted_tasks_are_served_from_postgres(
        services: dict[str, Any], redis_url: str, database_url: str) -> None:
    from tests.apps import automation

    env = {"DATABASE_URL": database_url}
    monitor = Monitor(redis_url, env=env, extra_args=["--max_tasks=3"]).start()
    try:
        monitor.wait_ready()
        token = monitor.token()
        headers = {"Authorization": f"Bearer {token}"}
        first = automation.fail.delay("first-of-many")
        ids = [first.id] + [automation.add.delay(i, i).id for i in range(6)]
        for task_id in ids:
            wait_for(lambda: row_status(database_url, task_id) in ("success", "failure"),
                     message=f"row for {task_id}")

        # Flower keeps three tasks; the first one is gone from its memory
        def memory_total() -> int:
            response = requests.get(f"{monitor.api}/tasks", headers=headers, timeout=5,
                                    params={"source": "memory", "limit": 100})
            return int(response.json()["total"])

        wait_for(lambda: memory_total() <= 3, message="Flower evicting tasks")
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
