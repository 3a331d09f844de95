"""Actions when the broker or the database is down: 503, and nothing half done.

The service runs in-process against a real PostgreSQL and a real Redis; the
"down" side is a port nothing listens on."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from celery import Celery
from psycopg.types.json import Jsonb

from flower_ops.db.actions import ActionStore
from flower_ops.db.pool import Database
from flower_ops.monitor.services.action_lookup import TaskLookup
from flower_ops.monitor.services.actions import TaskActionService
from flower_ops.monitor.services.audit import AuditTrail
from flower_ops.monitor.services.cancellation import Cancellation
from flower_ops.monitor.services.celery_gateway import CeleryGateway
from flower_ops.demo.embedded import free_port
from flower_ops.core.errors import Unavailable
from flower_ops.revocations import RevocationMarkers

pytestmark = pytest.mark.timeout(120)


def make_service(*, broker_url: str, backend_url: str, database_url: str,
                 memory: dict[str, Any] | None = None) -> TaskActionService:
    app = Celery("actions-failures", broker=broker_url, backend=backend_url,
                 set_as_current=False)
    app.conf.broker_connection_timeout = 2
    executor = ThreadPoolExecutor(max_workers=2)

    def run_blocking(fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args))

    store = ActionStore(Database(url=database_url, application_name="test-actions"))
    tasks = memory or {}
    gateway = CeleryGateway(capp=app, markers=RevocationMarkers(app), broker_timeout_seconds=2.0)
    audit = AuditTrail(store)
    return TaskActionService(
        lookup=TaskLookup(capp=app, store=store, run_blocking=run_blocking,
                          memory_lookup=lambda ids: {i: tasks[i] for i in ids if i in tasks}),
        gateway=gateway, store=store, audit=audit,
        cancellation=Cancellation(
            gateway=gateway, store=store, audit=audit, run_blocking=run_blocking,
            memory_states=lambda ids: {i: tasks[i].state for i in ids if i in tasks},
            record_revoked=lambda ids, at: None, confirm_seconds=1.0),
        run_blocking=run_blocking)


def insert_row(database_url: str, task_id: str, status: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO automation.job_executions (execution_id, task_name, status, args, "
            "kwargs, args_exact, queue, first_seen_at, first_seen_day) "
            "VALUES (%s, 'automation.add', %s, %s, '{}', true, 'celery', now(), "
            "(now() AT TIME ZONE 'UTC')::date)",
            (task_id, status, Jsonb([1, 2])))


def snapshot(database_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, retried_as FROM automation.job_executions "
                           "WHERE execution_id = %s", (task_id,)).fetchone()
        return {
            "row": row,
            "rows": conn.execute("SELECT count(*) FROM automation.job_executions").fetchone()[0],
            "history": conn.execute("SELECT state FROM automation.job_execution_history "
                                    "WHERE execution_id = %s", (task_id,)).fetchall(),
            "audit": [r[0] for r in conn.execute(
                "SELECT outcome FROM automation.operator_audit WHERE execution_id = %s",
                (task_id,)).fetchall()],
        }


@pytest.fixture
def migrated(database_url: str) -> Iterator[str]:
    database = Database(url=database_url, application_name="test-migrate")
    ActionStore(database).rows(["warm-up"])  # applies the migrations
    database.close()
    yield database_url


def test_broker_down_cancel_is_503_and_changes_nothing(redis_url: str, migrated: str) -> None:
    task_id = str(uuid.uuid4())
    insert_row(migrated, task_id, "pending")
    service = make_service(broker_url=f"redis://127.0.0.1:{free_port()}/0",
                           backend_url=redis_url, database_url=migrated)

    with pytest.raises(Unavailable):
        asyncio.run(service.cancel(task_id, subject="op"))

    after = snapshot(migrated, task_id)
    assert after["row"] == ("pending", None)
    assert after["history"] == []
    assert after["audit"] == ["unavailable"]
    assert task_id not in service.gateway.markers.recent()


def test_broker_down_retry_is_503_and_creates_no_row(redis_url: str, migrated: str) -> None:
    task_id = str(uuid.uuid4())
    insert_row(migrated, task_id, "failure")
    service = make_service(broker_url=f"redis://127.0.0.1:{free_port()}/0",
                           backend_url=redis_url, database_url=migrated)

    with pytest.raises(Unavailable):
        asyncio.run(service.retry(task_id, subject="op"))

    after = snapshot(migrated, task_id)
    assert after["row"] == ("failure", None)
    assert after["rows"] == 1
    assert after["audit"] == ["unavailable"]


def test_database_down_cancel_is_503_and_revokes_nothing(redis_url: str) -> None:
    task_id = str(uuid.uuid4())
    running = SimpleNamespace(uuid=task_id, state="STARTED", name="automation.sleep",
                              args="[5]", kwargs="{}", queue="celery", routing_key="celery",
                              exchange="")
    service = make_service(broker_url=redis_url, backend_url=redis_url,
                           database_url=f"postgresql://u:p@127.0.0.1:{free_port()}/none",
                           memory={task_id: running})

    with pytest.raises(Unavailable) as raised:
        asyncio.run(service.cancel(task_id, subject="op"))

    assert raised.value.status == 503
    assert task_id not in service.gateway.markers.recent()
