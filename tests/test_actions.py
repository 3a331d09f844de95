"""Cancel and retry end to end: a real `celery -A APP flower-ops` monitor with
DATABASE_URL, real prefork workers, the real sync worker, Redis and PostgreSQL."""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from testing.processes import CeleryWorker
from testing.services import PostgresService, RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(240)


def big_argument() -> dict[str, Any]:
    """About 5 KB, nested, with unicode, floats, nulls, booleans and big ints."""
    rows = [{"id": i, "name": f"Zoë-{i} 日本語 ✓ \u00e9\u0301", "ratio": i / 7 + 0.1,
             "tiny": 1e-300 * (i + 1), "none": None, "flag": i % 2 == 0,
             "nested": {"list": [i, -i, 2**53 + i, [None, "ü"]], "empty": {}}}
            for i in range(25)]
    return {"rows": rows, "emoji": "🚀" * 20, "quote": "'\"</script>"}


# bulk actions capped at 50 (test_bulk_limits_and_validation); inspect replies
# (a task's pool pid) every 2 s; rows flushed every 0.1 s
MONITOR_ENV = {"FLOWER_OPS_BULK_MAX_TASKS": "50", "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "2"}
SYNC_ENV = {"FLOWER_OPS_SYNC_METRICS_PORT": "0", "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.1"}


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name), monitor_env=MONITOR_ENV,
                           sync_env=SYNC_ENV) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def active_pid(stack: Stack, task_id: str) -> int | None:
    replies = stack.app.control.inspect(destination=[stack.worker.hostname], timeout=1).active()
    for requests_ in (replies or {}).values():
        for request in requests_:
            if request["id"] == task_id and request.get("worker_pid"):
                return int(request["worker_pid"])
    return None


def test_cancel_running_task_terminates_its_process(stack: Stack) -> None:
    from testing.apps import automation

    marker = Path(tempfile.mkdtemp()) / "done"
    seconds = 6.0
    task = automation.sleep.delay(seconds, str(marker))
    stack.wait_state(task.id, "STARTED")
    started = time.monotonic()
    pid = wait_for(lambda: active_pid(stack, task.id), timeout_seconds=20,
                   message="the task's pool process")

    response = stack.post(f"/tasks/{task.id}/cancel")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == task.id and body["outcome"] == "cancelled"
    assert body["previous_state"] == "STARTED" and body["state"] == "REVOKED"
    assert stack.row(task.id)["status"] == "cancelled"          # at once, not eventually
    wait_for(lambda: not pid_alive(pid), timeout_seconds=20, message=f"pool process {pid} gone")
    stack.wait_state(task.id, "REVOKED")
    # the task-revoked event has reached the sync worker: still cancelled, history kept
    wait_for(lambda: stack.row(task.id)["revoked_at"] is not None, timeout_seconds=20,
             message="revoked_at")
    remaining = seconds + 2 - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)  # past the moment the task would have written its marker
    assert not marker.exists()
    assert stack.row(task.id)["status"] == "cancelled"
    assert ("admin", "cancel", "cancelled") in stack.audit(task.id)


def test_cancel_queued_task_never_runs_after_a_consumer_starts(stack: Stack) -> None:
    from testing.apps import automation

    marker = Path(tempfile.mkdtemp()) / "ran"
    queued = automation.sleep.apply_async((0.1, str(marker)), queue="parked")
    stack.wait_state(queued.id, "PENDING")

    response = stack.post(f"/tasks/{queued.id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["previous_state"] == "PENDING"
    assert stack.row(queued.id)["status"] == "cancelled"

    # This worker did not exist at the broadcast, and has no --statedb
    late = CeleryWorker(stack.broker_url, queues=("parked",), concurrency=1).start()
    try:
        late.wait_ready(stack.app)
        after = automation.add.apply_async((1, 2), queue="parked")
        assert after.get(timeout=30) == 3
        stack.wait_state(queued.id, "REVOKED")   # received, then discarded
    finally:
        late.stop()
    assert not marker.exists()
    assert stack.row(queued.id)["status"] == "cancelled"


def test_retry_failed_task_sends_exact_arguments_to_the_new_run(stack: Stack) -> None:
    from testing.apps import automation

    argument = big_argument()
    failed = automation.fail.apply_async(kwargs={"message": argument})
    stack.wait_state(failed.id, "FAILURE")
    stack.wait_status(failed.id, "failure")

    response = stack.post(f"/tasks/{failed.id}/retry")

    assert response.status_code == 200, response.text
    body = response.json()
    new_id = body["new_id"]
    assert new_id != failed.id and body["new_state"] == "PENDING"
    assert body["state"] == "FAILURE"
    stack.wait_state(new_id, "FAILURE")
    rerun = stack.app.AsyncResult(new_id)
    rerun.backend.get_task_meta(new_id, cache=False)
    assert rerun.kwargs == {"message": argument}   # what the worker received
    assert rerun.name == "automation.fail"
    original_row = stack.wait_status(failed.id, "failure")
    assert original_row["retried_as"] == new_id
    new_row = stack.wait_status(new_id, "failure")
    assert new_row["retry_of"] == failed.id
    assert new_row["kwargs"] == {"message": argument} and new_row["args_exact"]
    def linked() -> dict[str, Any] | None:
        detail = stack.get(f"/tasks/{failed.id}").json()
        return detail if detail.get("retried_as") == new_id else None

    detail = wait_for(linked, timeout_seconds=20, message="GET /tasks/{id} shows retried_as")
    assert [s["state"] for s in detail["history"]].count("FAILURE") >= 1
    assert ("admin", "retry", "retried") in stack.audit(failed.id)

    again = stack.post(f"/tasks/{failed.id}/retry")
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "already_retried"


def test_retry_cancelled_task_reruns_it_on_the_same_queue(stack: Stack) -> None:
    from testing.apps import automation

    argument = big_argument()
    queued = automation.echo.apply_async(args=[argument, 1.5, None, "ü"],
                                         kwargs={"k": argument}, queue="parked2")
    stack.wait_state(queued.id, "PENDING")
    assert stack.post(f"/tasks/{queued.id}/cancel").status_code == 200
    stack.wait_status(queued.id, "cancelled")

    response = stack.post(f"/tasks/{queued.id}/retry")
    assert response.status_code == 200, response.text
    new_id = response.json()["new_id"]
    assert response.json()["queue"] == "parked2"
    late = CeleryWorker(stack.broker_url, queues=("parked2",), concurrency=1).start()
    try:
        late.wait_ready(stack.app)
        result = stack.app.AsyncResult(new_id).get(timeout=30)
    finally:
        late.stop()
    assert result == {"args": [argument, 1.5, None, "ü"], "kwargs": {"k": argument}}
    assert stack.row(queued.id)["status"] == "cancelled"     # the original stays as it was


def test_actions_work_for_tasks_only_postgresql_knows(stack: Stack) -> None:
    """Rows the monitor's memory and the result backend never saw (Flower
    restarted, memory evicted): the database answers for them."""
    failed_id, pending_id = f"db-only-{uuid.uuid4()}", f"db-only-{uuid.uuid4()}"
    argument = big_argument()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO automation.job_executions (execution_id, task_name, status, args, "
            "kwargs, args_exact, queue, routing_key, exchange, first_seen_at, first_seen_day) "
            "VALUES (%s, 'automation.echo', 'failure', %s, %s, true, 'celery', 'celery', '', "
            "now(), (now() AT TIME ZONE 'UTC')::date), "
            "(%s, 'automation.add', 'pending', '[1, 2]', '{}', true, 'celery', 'celery', '', "
            "now(), (now() AT TIME ZONE 'UTC')::date)",
            (failed_id, psycopg.types.json.Jsonb([argument]),
             psycopg.types.json.Jsonb({"x": argument}), pending_id))

    retried = stack.post(f"/tasks/{failed_id}/retry")
    assert retried.status_code == 200, retried.text
    new_id = retried.json()["new_id"]
    assert stack.app.AsyncResult(new_id).get(timeout=30) == {"args": [argument],
                                                              "kwargs": {"x": argument}}
    cancelled = stack.post(f"/tasks/{pending_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert stack.row(pending_id)["status"] == "cancelled"
    assert stack.row(failed_id)["retried_as"] == new_id


def test_cancel_finished_task_is_a_conflict(stack: Stack) -> None:
    from testing.apps import automation

    done = automation.add.delay(1, 1)
    stack.wait_state(done.id, "SUCCESS")
    response = stack.post(f"/tasks/{done.id}/cancel")
    assert response.status_code == 409
    assert response.json()["detail"]["state"] == "SUCCESS"
    assert ("admin", "cancel", "rejected") in stack.audit(done.id)


def test_retry_running_task_is_a_conflict(stack: Stack) -> None:
    from testing.apps import automation

    running = automation.sleep.delay(2)
    stack.wait_state(running.id, "STARTED")
    response = stack.post(f"/tasks/{running.id}/retry")
    assert response.status_code == 409
    assert response.json()["error"].startswith("cannot retry")


def test_unknown_task_is_404_and_bad_input_is_400(stack: Stack) -> None:
    assert stack.post(f"/tasks/{uuid.uuid4()}/cancel").status_code == 404
    assert stack.post(f"/tasks/{uuid.uuid4()}/retry").status_code == 404
    assert stack.post(f"/tasks/{uuid.uuid4()}/retry", {"force": "yes"}).status_code == 400
    bad = requests.post(f"{stack.monitor.api}/tasks/x/retry", data=b"{not json",
                        headers=stack.headers(), timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]


def test_actions_need_the_write_scope(stack: Stack) -> None:
    read_only = stack.monitor.token(scopes="monitoring:read")
    for path, body in ((f"/tasks/{uuid.uuid4()}/cancel", None),
                       (f"/tasks/{uuid.uuid4()}/retry", None),
                       ("/tasks/bulk/cancel", {"ids": ["a"]}),
                       ("/tasks/bulk/retry", {"ids": ["a"]})):
        response = stack.post(path, body, token=read_only)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["detail"]["required_scope"] == "monitoring:write"
    anonymous = requests.post(f"{stack.monitor.api}/tasks/x/cancel", timeout=10)
    assert anonymous.status_code == 401


def test_bulk_cancel_by_filter_dry_run_then_real_run(stack: Stack) -> None:
    from testing.apps import automation

    queued = [automation.sleep.apply_async((0.1,), queue="bulkq") for _ in range(3)]
    for task in queued:
        stack.wait_state(task.id, "PENDING")
    ids = {t.id for t in queued}

    dry = stack.post("/tasks/bulk/cancel", {"filters": {"queue": "bulkq"}, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert {r["id"] for r in dry.json()["results"]} == ids
    assert {r["outcome"] for r in dry.json()["results"]} == {"would_cancel"}
    assert all(stack.get(f"/tasks/{i}").json()["state"] == "PENDING" for i in ids)
    assert all(stack.row(i) is None or stack.row(i)["status"] == "pending" for i in ids)

    real = stack.post("/tasks/bulk/cancel", {"filters": {"queue": "bulkq", "state": "PENDING"}})
    assert real.status_code == 200, real.text
    assert real.json()["counts"] == {"cancelled": 3}
    assert all(stack.row(i)["status"] == "cancelled" for i in ids)
    assert all(stack.audit(i) == [("admin", "cancel", "cancelled")] for i in ids)

    dry_retry = stack.post("/tasks/bulk/retry", {"ids": sorted(ids) + ["nope"],
                                                 "dry_run": True})
    assert dry_retry.json()["counts"] == {"would_retry": 3, "not_found": 1}
    retry = stack.post("/tasks/bulk/retry", {"ids": sorted(ids) + ["nope"]})
    assert retry.status_code == 200, retry.text
    outcomes = {r["id"]: r for r in retry.json()["results"]}
    assert outcomes["nope"]["outcome"] == "not_found"
    new_ids = [outcomes[i]["new_id"] for i in ids]
    assert all(stack.row(n)["retry_of"] in ids for n in new_ids)
    twice = stack.post("/tasks/bulk/retry", {"ids": sorted(ids)})
    assert twice.json()["counts"] == {"rejected": 3}     # idempotent: already retried


def test_bulk_limits_and_validation(stack: Stack) -> None:
    too_many = stack.post("/tasks/bulk/cancel", {"ids": [f"t{i}" for i in range(51)]})
    assert too_many.status_code == 400
    assert too_many.json()["detail"]["max_tasks"] == 50
    for body in ({}, {"ids": ["a"], "filters": {}}, {"ids": "a"}, {"filters": {"bogus": 1}},
                 {"filters": {"state": "NOPE"}}, {"ids": ["a"], "dry_run": "yes"},
                 {"ids": ["a"], "limit": 0}, [1, 2]):
        response = stack.post("/tasks/bulk/retry", body)
        assert response.status_code == 400, (body, response.text)
    assert stack.post("/tasks/bulk/explode", {"ids": ["a"]}).status_code == 404
    # one name for the filter object, the feed's: the old one is told the new
    renamed = stack.post("/tasks/bulk/cancel", {"filter": {"queue": "x"}})
    assert renamed.status_code == 400 and renamed.json()["detail"]["use"] == "filters"


def test_openapi_describes_every_action_route(stack: Stack) -> None:
    paths = requests.get(f"{stack.monitor.api}/openapi.json", timeout=10).json()["paths"]
    for path in ("/tasks/{task_id}/cancel", "/tasks/{task_id}/retry", "/tasks/bulk/cancel",
                 "/tasks/bulk/retry"):
        assert "post" in paths[path]
        responses = paths[path]["post"]["responses"]
        assert {"200", "401", "403", "503"} <= set(responses)
    assert "get" in paths["/audit"]


def test_audit_log_lists_who_did_what_newest_first(stack: Stack) -> None:
    unknown = f"audit-{uuid.uuid4()}"
    assert stack.post(f"/tasks/{unknown}/cancel").status_code == 404
    entries = stack.get("/audit", task_id=unknown).json()["entries"]
    # the audit says it with the answer's word
    assert [(e["subject"], e["action"], e["outcome"]) for e in entries] == [
        ("admin", "cancel", "not_found")]
    page = stack.get("/audit", limit=2).json()
    assert len(page["entries"]) == 2 and page["next"]
    older = stack.get("/audit", limit=2, cursor=page["next"]).json()["entries"]
    assert older[0]["id"] < page["entries"][-1]["id"]
    assert stack.get("/audit", limit="x").status_code == 400
    assert stack.get("/audit", action="delete").status_code == 400
