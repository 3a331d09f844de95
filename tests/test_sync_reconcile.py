"""Reconciliation passes over open rows against a real PostgreSQL and a real
Redis result backend: an open state the backend repeats on every pass (a
long-running task reads STARTED) must change nothing and add no history."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from celery import Celery

from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore, batch_database
from sync_worker.liveness import WorkerLiveness
from sync_worker.reconcile import BackendReader, Reconciler


@pytest.fixture
def store(database_url: str) -> Iterator[PgExecutionStore]:
    database = batch_database(database_url, application_name="test-sync-reconcile")
    database.open()
    yield PgExecutionStore(database)
    database.close()


@pytest.fixture
def backend_app(redis_url: str) -> Iterator[Celery]:
    app = Celery("reconcile-tests", broker=redis_url, backend=redis_url, set_as_current=False)
    yield app
    app.close()


def reconciler(store: PgExecutionStore, app: Celery) -> Reconciler:
    # a liveness that never listened declares nobody lost
    return Reconciler(store=store, backend_reader=lambda: BackendReader(app.backend),
                      liveness=WorkerLiveness(), settle_seconds=0.0)


def history(database_url: str, task_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT state, source FROM automation.job_execution_history "
            "WHERE execution_id = %s ORDER BY occurred_at", (task_id,)).fetchall()


def status(database_url: str, task_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT status FROM automation.job_executions "
                             "WHERE execution_id = %s", (task_id,)).fetchone()
        assert found is not None
        return str(found[0])


def observe(store: PgExecutionStore, transition: Transition) -> None:
    store.apply(fold([transition]).values(), [transition])


def test_repeated_open_state_from_the_backend_changes_nothing(
        store: PgExecutionStore, backend_app: Celery, database_url: str) -> None:
    running, retrying = uuid.uuid4().hex, uuid.uuid4().hex
    observe(store, Transition(running, "STARTED", 1_700_000_000.0, "started",
                              {"worker": "w1@host", "task_name": "long"}))
    observe(store, Transition(retrying, "RETRY", 1_700_000_000.0, "retried",
                              {"worker": "w1@host", "task_name": "flaky"}))
    backend_app.backend.store_result(running, {"pid": 1, "hostname": "w1@host"}, "STARTED")
    backend_app.backend.store_result(retrying, RuntimeError("again"), "RETRY")

    rec = reconciler(store, backend_app)
    for _ in range(3):
        report = rec.run_once()
        assert report.checked == 2
        assert report.changed == 0 and report.from_backend == 0
    assert history(database_url, running) == [("STARTED", "event")]
    assert history(database_url, retrying) == [("RETRY", "event")]


def test_open_state_from_the_backend_still_moves_a_row_on_once(
        store: PgExecutionStore, backend_app: Celery, database_url: str) -> None:
    task_id = uuid.uuid4().hex
    observe(store, Transition(task_id, "RECEIVED", 1_700_000_000.0, "received",
                              {"worker": "w1@host", "task_name": "long"}))
    backend_app.backend.store_result(task_id, {"pid": 1, "hostname": "w1@host"}, "STARTED")

    rec = reconciler(store, backend_app)
    first = rec.run_once()
    assert first.changed == 1 and first.from_backend == 1
    assert status(database_url, task_id) == "started"
    again = rec.run_once()
    assert again.changed == 0
    assert history(database_url, task_id) == [("RECEIVED", "event"), ("STARTED", "reconcile")]

    backend_app.backend.store_result(task_id, 42, "SUCCESS")
    final = rec.run_once()
    assert final.changed == 1
    assert status(database_url, task_id) == "success"
    assert rec.run_once().checked == 0
