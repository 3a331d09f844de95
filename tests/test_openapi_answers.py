"""Every answer of every operation is typed in OpenAPI (SPEC §11), and real
answers match it.

A real stack (a worker, the monitor with PostgreSQL, the sync worker) gets
tasks of every kind: a success, a failure, a retried one, a long one (stuck:
an alert), queued ones in a queue nobody consumes (backlog: an alert; one is
cancelled). Then every operation of the served document is called for its
success answer and its error answers (401 without a token, 403 without the
scope, 400 for a bad parameter or body, 404 for an unknown task, 409 in the
wrong state, 413 for a body too large, 503 from a monitor whose broker and
database are gone), and each JSON body is validated against the schema the
document gives for that status. The test fails when an operation of the
document was not called (a new route needs its calls here) and when a status
came back that the operation does not document.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import pytest
import requests
import websocket

from flower_ops.core.times import ISO_PATTERN, iso_utc, parse_instant
from flower_ops.demo.embedded import free_port
from testing.processes import CeleryWorker, Monitor
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
READ, WRITE = "monitoring:read", "monitoring:write"
TOO_LARGE = b" " * (1024 * 1024 + 1)
LONG_ID = "x" * 300
MONITOR_ENV = {
    **FAST_MONITOR_REFRESH,
    "FLOWER_OPS_BULK_MAX_TASKS": "20", "FLOWER_OPS_QUEUES": "parked",
    # alerts, cheaply: a task running over 1 s is stuck, "parked" backs up at once
    "FLOWER_OPS_STUCK_TASK_SECONDS": "1", "FLOWER_OPS_BACKLOG_MESSAGES": "1",
    "FLOWER_OPS_BACKLOG_SECONDS": "0",
    # a running task signalled is not waited for long: a 202 (requested)
    "FLOWER_OPS_CANCEL_CONFIRM_SECONDS": "0.1",
    # a second monitor (check_db_only_task) runs beside the first: one token key
    "FLOWER_OPS_TOKEN_SECRET": "openapi-answers-shared-token-secret-0123456789",
}
METHODS = ("get", "post", "put", "patch", "delete")
# Routes outside the document's paths, typed by its components all the same
OUTSIDE: dict[tuple[str, str], dict[str, Any]] = {}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in METHODS}


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator of ``schema`` whose ``#/components/...`` refs resolve in ``document``."""
    root = {"$schema": DRAFT, **schema, "components": document["components"]}
    return jsonschema_rs.validator_for(root, validate_formats=True)


@dataclass
class Answer:
    operation: tuple[str, str]
    status: int
    body: Any


@dataclass
class Checker:
    """Calls the API, checks each answer against the document, remembers them."""

    document: dict[str, Any]
    answers: list[Answer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, expect: int | tuple[int, ...], *, api: str,
             token: str | None = None, values: dict[str, str] | None = None,
             **kwargs: Any) -> Any:
        """``method`` ``path`` (a path of the document; ``values`` fill its
        ``{names}``) on ``api``; the answer must be ``expect``; returns its body."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = api + path.format(**(values or {}))
        response = requests.request(method, url, headers=headers, timeout=60, **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, (method, url, response.status_code,
                                                  response.text[:500])
        assert response.headers["Content-Type"].startswith("application/json"), url
        body = response.json()
        self.check((method, path), response.status_code, body)
        return body

    def check(self, operation: tuple[str, str], status: int, body: Any) -> None:
        self.answers.append(Answer(operation, status, body))
        method, path = operation
        responses = OUTSIDE.get(operation) or \
            self.document["paths"][path][method.lower()]["responses"]
        documented = responses.get(str(status))
        if documented is None:
            self.problems.append(f"{method} {path}: {status} is not documented")
            return
        if status == 101:
            return
        schema = documented["content"]["application/json"]["schema"]
        for error in schema_validator(self.document, schema).iter_errors(body):
            where = "/".join(str(p) for p in error.instance_path)
            self.problems.append(f"{method} {path} {status} at /{where}: {error.message}"[:400])


@dataclass
class Seeded:
    ok: str
    failed: str
    flaky: str
    running: str
    parked: list[str]


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


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Seeded:
    from testing.apps import automation

    ok = automation.add.delay(2, 3)
    failed = automation.fail.delay("kaput")
    flaky = automation.flaky.delay(succeed_on=2)
    running = automation.sleep.delay(60)
    parked = [automation.echo.apply_async(("parked", i), queue="parked") for i in range(3)]
    stack.wait_state(ok.id, "SUCCESS")
    stack.wait_state(failed.id, "FAILURE")
    stack.wait_state(flaky.id, "SUCCESS")
    stack.wait_state(running.id, "STARTED")
    for result in parked:
        stack.wait_state(result.id, "PENDING")
    for task_id, status in ((ok.id, "success"), (failed.id, "failure"),
                            (flaky.id, "success")):
        stack.wait_status(task_id, status)

    def alerts_raised() -> bool:
        kinds = {a["kind"] for a in stack.get_json("/alerts")["alerts"]}
        return {"stuck_task", "queue_backlog"} <= kinds

    wait_for(alerts_raised, timeout_seconds=30, message="a stuck task and a backlog alert")
    return Seeded(ok=ok.id, failed=failed.id, flaky=flaky.id, running=running.id,
                  parked=[r.id for r in parked])


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = requests.get(f"{stack.api}/openapi.json", timeout=10)
    assert response.status_code == 200
    return dict(response.json())


def test_every_operation_answers_as_documented(stack: Stack, seeded: Seeded,
                                               document: dict[str, Any]) -> None:
    checker = Checker(document)
    api = stack.api
    full = stack.token
    read_only = stack.monitor.token(READ)
    write_only = stack.monitor.token(WRITE)
    call = checker.call

    def denied(method: str, path: str, values: dict[str, str] | None = None,
               **kwargs: Any) -> None:
        """401 without a token; 403 without the method's scope."""
        call(method, path, 401, api=api, values=values, **kwargs)
        call(method, path, 403, api=api, values=values,
             token=read_only if method == "POST" else write_only, **kwargs)

    # -- public: the index and the token ------------------------------------------------
    call("GET", "/", 200, api=api)
    call("GET", "/", 400, api=api, params={"x": "1"})
    basic = stack.monitor.basic_auth
    call("POST", "/token", 200, api=api, json={}, auth=basic)
    call("POST", "/token", 200, api=api, json={"scopes": READ}, auth=basic)
    call("POST", "/token", 400, api=api, json={"scopes": 5}, auth=basic)
    call("POST", "/token", 401, api=api, json={}, auth=(basic[0] if basic else "x", "wrong"))
    call("POST", "/token", 403, api=api, json={"scopes": ["admin:all"]}, auth=basic)
    call("POST", "/token", 413, api=api, data=TOO_LARGE, auth=basic,
         headers={"Content-Type": "application/json"})

    # -- reads ----------------------------------------------------------------------------
    stats = call("GET", "/stats", 200, api=api, token=full)
    assert stats["alerts"], "an alert in /stats"
    call("GET", "/stats", 400, api=api, token=full, params={"verbose": "1"})
    denied("GET", "/stats")

    for params in ({}, {"source": "db"}, {"state": "FAILURE", "limit": "1"},
                   {"queue": "parked", "order": "asc"}, {"source": "all", "limit": "2"},
                   {"source": "all", "search": "parked", "order": "asc"}):
        listing = call("GET", "/tasks", 200, api=api, token=full, params=params)
        if listing["next"]:
            older = call("GET", "/tasks", 200, api=api, token=full,
                         params={**params, "cursor": listing["next"]})
            call("GET", "/tasks", 200, api=api, token=full,
                 params={**params, "cursor": older["prev"]})
    call("GET", "/tasks", 400, api=api, token=full, params={"state": "BOGUS"})
    call("GET", "/tasks", 400, api=api, token=full, params={"since": "yesterday"})
    call("GET", "/tasks", 400, api=api, token=full, params={"source": "db", "cursor": "mn1"})
    denied("GET", "/tasks")

    for params in ({}, {"source": "db", "name": "automation.*"},
                   {"source": "all", "queue": "parked", "state": "PENDING"},
                   {"source": "memory", "search": "kaput"}):
        counts = call("GET", "/tasks/counts", 200, api=api, token=full, params=params)
        assert counts["total"] == sum(counts["by_state"].values())
    call("GET", "/tasks/counts", 400, api=api, token=full, params={"bogus": "1"})
    call("GET", "/tasks/counts", 400, api=api, token=full, params={"source": "nowhere"})
    denied("GET", "/tasks/counts")

    for task_id in (seeded.ok, seeded.failed, seeded.flaky, seeded.running, seeded.parked[0]):
        call("GET", "/tasks/{task_id}", 200, api=api, token=full, values={"task_id": task_id})
    call("GET", "/tasks/{task_id}", 400, api=api, token=full, values={"task_id": LONG_ID})
    call("GET", "/tasks/{task_id}", 404, api=api, token=full, values={"task_id": "no-such"})
    denied("GET", "/tasks/{task_id}", {"task_id": seeded.ok})

    for path in ("/workers", "/queues", "/alerts"):
        call("GET", path, 200, api=api, token=full)
        call("GET", path, 400, api=api, token=full, params={"x": "1"})
        denied("GET", path)
    call("GET", "/alerts", 200, api=api, token=full, params={"kind": "stuck_task", "limit": "1"})
    call("GET", "/alerts", 400, api=api, token=full, params={"kind": "nope"})

    # the console's series (memory and PostgreSQL) and task-name table
    series = call("GET", "/series", 200, api=api, token=full)
    assert series["source"] == "memory+db"
    call("GET", "/series", 200, api=api, token=full,
         params={"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00Z",
                 "names": "automation.add,automation.fail", "queues": "parked"})
    call("GET", "/series", 400, api=api, token=full, params={"since": "yesterday"})
    denied("GET", "/series")
    table = call("GET", "/task-names", 200, api=api, token=full)
    assert any((row["last_failure"] or {}).get("id") == seeded.failed
               for row in table["names"]), table
    memory_since = parse_instant(series["memory_since"])
    call("GET", "/task-names", 200, api=api, token=full,
         params={"since": iso_utc(memory_since), "until": iso_utc(memory_since + 3600),
                 "sort": "p95", "limit": "5"})
    call("GET", "/task-names", 400, api=api, token=full, params={"limit": "0"})
    denied("GET", "/task-names")

    # -- actions ----------------------------------------------------------------------------
    task = {"task_id": seeded.parked[0]}
    cancelled = call("POST", "/tasks/{task_id}/cancel", 200, api=api, token=full, values=task)
    assert cancelled["outcome"] == "cancelled"
    call("POST", "/tasks/{task_id}/cancel", 409, api=api, token=full, values=task)
    call("POST", "/tasks/{task_id}/cancel", 409, api=api, token=full,
         values={"task_id": seeded.ok})
    call("POST", "/tasks/{task_id}/cancel", 404, api=api, token=full,
         values={"task_id": "no-such"})
    call("POST", "/tasks/{task_id}/cancel", 400, api=api, token=full,
         values={"task_id": LONG_ID})
    call("POST", "/tasks/{task_id}/cancel", 413, api=api, token=full, values=task,
         data=TOO_LARGE, headers={"Content-Type": "application/json"})
    denied("POST", "/tasks/{task_id}/cancel", task)
    # a running task, signalled: terminated (200) within the confirmation time or not (202)
    call("POST", "/tasks/{task_id}/cancel", (200, 202), api=api, token=full,
         values={"task_id": seeded.running})
    requested = cancel_on_a_busy_worker(stack, checker)
    assert requested["outcome"] == "requested"

    failed = {"task_id": seeded.failed}
    call("POST", "/tasks/{task_id}/retry", 400, api=api, token=full, values=failed,
         json={"nope": 1})
    retried = call("POST", "/tasks/{task_id}/retry", 200, api=api, token=full, values=failed)
    call("POST", "/tasks/{task_id}/retry", 409, api=api, token=full, values=failed)
    call("POST", "/tasks/{task_id}/retry", 409, api=api, token=full,
         values={"task_id": seeded.ok})
    call("POST", "/tasks/{task_id}/retry", 404, api=api, token=full,
         values={"task_id": "no-such"})
    call("POST", "/tasks/{task_id}/retry", 413, api=api, token=full, values=failed,
         data=TOO_LARGE, headers={"Content-Type": "application/json"})
    denied("POST", "/tasks/{task_id}/retry", failed)
    stack.wait_state(retried["new_id"], "FAILURE")
    call("GET", "/tasks/{task_id}", 200, api=api, token=full,
         values={"task_id": retried["new_id"]})

    bulk_cancel, bulk_retry = "/tasks/bulk/cancel", "/tasks/bulk/retry"
    call("POST", bulk_cancel, 200, api=api, token=full,
         json={"filters": {"queue": "parked"}, "dry_run": True})
    call("POST", bulk_cancel, 200, api=api, token=full,
         json={"ids": [seeded.parked[1], seeded.ok, "no-such"]})
    call("POST", bulk_retry, 200, api=api, token=full,
         json={"filters": {"state": ["FAILURE"], "since": "2020-01-01T00:00:00Z"},
               "dry_run": True, "force": True, "limit": 5})
    call("POST", bulk_retry, 200, api=api, token=full,
         json={"ids": [retried["new_id"], seeded.ok, "no-such"]})
    for path in (bulk_cancel, bulk_retry):
        call("POST", path, 400, api=api, token=full, json={"filter": {}})
        call("POST", path, 400, api=api, token=full, json={"ids": []})
        call("POST", path, 413, api=api, token=full, data=TOO_LARGE,
             headers={"Content-Type": "application/json"})
        denied("POST", path, json={"ids": [seeded.ok]})

    check_workflows(stack, checker, denied)
    check_idempotency(stack, checker)

    time.sleep(0.5)   # audit records of the refusals are written after the answers
    audit = call("GET", "/audit", 200, api=api, token=full)
    assert audit["entries"], "audited actions"
    call("GET", "/audit", 200, api=api, token=full,
         params={"task_id": seeded.failed, "action": "retry", "limit": "1"})
    call("GET", "/audit", 400, api=api, token=full, params={"limit": "0"})
    denied("GET", "/audit")

    # after the cancels: resolved alerts, a REVOKED task with operator history
    call("GET", "/alerts", 200, api=api, token=full)
    call("GET", "/tasks/{task_id}", 200, api=api, token=full, values=task)

    # -- the live feed ------------------------------------------------------------------------
    feed = websocket.create_connection(stack.monitor.ws_url, timeout=10,
                                       header=[f"Authorization: Bearer {full}"])
    try:
        assert feed.getstatus() == 101
        checker.check(("GET", "/ws"), 101, None)
    finally:
        feed.close()
    call("GET", "/ws", 400, api=api, token=full)
    denied("GET", "/ws")
    call("GET", "/ws", 403, api=api, token=full, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example"})

    # -- a task only PostgreSQL knows, 503s ----------------------------------------------
    check_db_only_task(stack, checker, seeded)
    check_unavailable(checker)

    called = {answer.operation for answer in checker.answers}
    seen: dict[tuple[str, str], set[int]] = {}
    for answer in checker.answers:
        seen.setdefault(answer.operation, set()).add(answer.status)
    for (method, path), statuses in sorted(seen.items()):
        print(f"{method} {path}: {sorted(statuses)}")
    problems = "\n".join(checker.problems)
    assert not checker.problems, f"{len(checker.problems)} answer(s) off the document:\n" \
                                 f"{problems}"
    assert operations(document) - called == set(), "operations without a call here"
    documented = {((method.upper(), path), int(status))
                  for path, item in document["paths"].items() for method, op in item.items()
                  for status in op["responses"]}
    observed = {(answer.operation, answer.status) for answer in checker.answers}
    assert sorted(documented - observed) == [], "documented answers no call here produced"


def check_workflows(stack: Stack, checker: Checker, denied: Callable[..., None]) -> None:
    """A chain that failed (resumed, then nothing left to resume) and one
    waiting in a queue nobody reads (cancelled, then nothing left to cancel)."""
    from celery import chain

    from testing.apps import automation

    api, full, call = stack.api, stack.token, checker.call
    broken = chain(automation.fail.si("workflow"), automation.add.si(1, 2)).apply_async()
    parked = chain(automation.echo.si("waiting").set(queue="parked"),
                   automation.add.si(1, 1)).apply_async()
    failed, waiting = {"root_id": broken.parent.id}, {"root_id": parked.parent.id}
    wait_for(lambda: stack.get(f"/workflows/{failed['root_id']}").json().get("state")
             == "failed", timeout_seconds=30, message="the broken chain failed")
    stack.wait_state(waiting["root_id"], "PENDING")

    listing = call("GET", "/workflows", 200, api=api, token=full, params={"limit": "1"})
    assert listing["next"], listing
    call("GET", "/workflows", 200, api=api, token=full,
         params={"cursor": listing["next"], "state": "running", "name": "automation.*"})
    call("GET", "/workflows", 200, api=api, token=full, params={"source": "memory"})
    call("GET", "/workflows", 400, api=api, token=full, params={"state": "bogus"})
    call("GET", "/workflows", 400, api=api, token=full, params={"cursor": "nope"})
    denied("GET", "/workflows")
    one = "/workflows/{root_id}"
    for values in (failed, waiting, {"root_id": broken.id}):
        call("GET", one, 200, api=api, token=full, values=values)
    call("GET", one, 200, api=api, token=full, values=failed, params={"source": "memory"})
    call("GET", one, 400, api=api, token=full, values={"root_id": LONG_ID})
    call("GET", one, 404, api=api, token=full, values={"root_id": "no-such"})
    denied("GET", one, failed)

    # the resumed chain fails again at once (automation.fail): the 409 of a
    # retry is the waiting chain's (nothing failed), before it is cancelled
    for action, target, refused in (("retry", failed, waiting), ("cancel", waiting, waiting)):
        path = f"/workflows/{{root_id}}/{action}"
        call("POST", path, 200, api=api, token=full, values=target, json={"dry_run": True})
        call("POST", path, 400, api=api, token=full, values=target, json={"nope": 1})
        call("POST", path, 200, api=api, token=full, values=target)
        call("POST", path, 409, api=api, token=full, values=refused)
        call("POST", path, 404, api=api, token=full, values={"root_id": "no-such"})
        call("POST", path, 413, api=api, token=full, values=target, data=TOO_LARGE,
             headers={"Content-Type": "application/json"})
        denied("POST", path, target)


def check_idempotency(stack: Stack, checker: Checker) -> None:
    """Idempotency-Key: a key used again for another request is a 422; a key
    whose first request is still running (a claim another monitor holds) is
    a 409 once the wait is over."""
    import psycopg

    from flower_ops.monitor.http.idempotent import fingerprint

    api, full, call = stack.api, stack.token, checker.call
    for path in ("/tasks/{task_id}/cancel", "/tasks/{task_id}/retry"):
        key = {"Idempotency-Key": f"k-{path}"}
        call("POST", path, 404, api=api, token=full, values={"task_id": "no-such"}, headers=key)
        call("POST", path, 422, api=api, token=full, values={"task_id": "no-such-2"},
             headers=key)
    for action in ("retry", "cancel"):
        path, key = f"/workflows/{{root_id}}/{action}", {"Idempotency-Key": f"w-{action}"}
        call("POST", path, 404, api=api, token=full, values={"root_id": "no-such"},
             headers=key)
        call("POST", path, 422, api=api, token=full, values={"root_id": "no-such-2"},
             headers=key)
    busy = []
    for action in ("cancel", "retry"):
        path, key = f"/tasks/bulk/{action}", {"Idempotency-Key": f"b-{action}"}
        call("POST", path, 200, api=api, token=full, json={"ids": ["no-such"]}, headers=key)
        call("POST", path, 422, api=api, token=full, json={"ids": ["no-such-2"]}, headers=key)
        body = {"ids": ["no-such-3"]}
        busy.append((path, body))
        with psycopg.connect(stack.require_database_url(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO automation.idempotency_keys (subject, idempotency_key, "
                "fingerprint, instance_id) VALUES ('admin', %s, %s, 'elsewhere:1')",
                (f"busy-{action}", fingerprint("POST", f"/api/automation/monitoring{path}",
                                               json.dumps(body).encode())))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda item: call(
            "POST", item[0], 409, api=api, token=full, json=item[1],
            headers={"Idempotency-Key": "busy-" + item[0].rsplit("/", 1)[1]}), busy))
    assert all(a["detail"]["reason"] == "idempotency_in_progress" for a in answers), answers


def cancel_on_a_busy_worker(stack: Stack, checker: Checker) -> Any:
    """A threads pool cannot terminate a task (the worker refuses the revoke's
    terminate): the task goes on, and after the confirmation time (0.1 s here)
    the answer is a 202 (requested)."""
    from testing.apps import automation

    worker = CeleryWorker(stack.broker_url, queues=("threads",), concurrency=1,
                          pool="threads")
    worker.start()
    try:
        worker.wait_ready(stack.app)
        task = automation.sleep.apply_async((3,), queue="threads")
        stack.wait_state(task.id, "STARTED")
        return checker.call("POST", "/tasks/{task_id}/cancel", 202, api=stack.api,
                            token=stack.token, values={"task_id": task.id})
    finally:
        worker.stop()


def check_db_only_task(stack: Stack, checker: Checker, seeded: Seeded) -> None:
    """A second monitor, started now: its memory never saw the seeded tasks."""
    monitor = Monitor(stack.broker_url, env={**MONITOR_ENV,
                                             "DATABASE_URL": stack.require_database_url()})
    monitor.start()
    try:
        monitor.wait_ready()
        token = monitor.token()
        for task_id in (seeded.ok, seeded.failed, seeded.parked[0]):
            detail = checker.call("GET", "/tasks/{task_id}", 200, api=monitor.api, token=token,
                                  values={"task_id": task_id})
            assert detail["source"] == "db"
    finally:
        monitor.stop()


def check_unavailable(checker: Checker) -> None:
    """503s from a monitor whose broker and database are not there (each
    database call waits for the pool's 5 s, so they run side by side)."""
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    dead_database = f"postgresql://postgres@127.0.0.1:{free_port()}/gone"
    monitor = Monitor(dead_broker, env={"DATABASE_URL": dead_database})
    monitor.start()
    try:
        monitor.wait_ready()
        token = monitor.token()
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/queues", {}), ("GET", "/tasks", {"params": {"source": "db"}}),
            ("GET", "/tasks", {"params": {"source": "all"}}),
            ("GET", "/tasks/counts", {"params": {"source": "all"}}),
            ("GET", "/audit", {}), ("GET", "/tasks/{task_id}", {}),
            ("GET", "/series", {}), ("GET", "/task-names", {}),
            ("POST", "/tasks/{task_id}/cancel", {}), ("POST", "/tasks/{task_id}/retry", {}),
            ("POST", "/tasks/bulk/cancel", {"json": {"ids": ["gone"]}}),
            ("POST", "/tasks/bulk/retry", {"json": {"ids": ["gone"]}}),
            ("GET", "/workflows", {}), ("GET", "/workflows/{root_id}", {}),
            ("POST", "/workflows/{root_id}/retry", {}),
            ("POST", "/workflows/{root_id}/cancel", {}),
        ]
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(checker.call, method, path, 503, api=monitor.api,
                                   token=token, values={"task_id": "gone", "root_id": "gone"},
                                   **kwargs)
                       for method, path, kwargs in calls]
            for future in futures:
                future.result()
    finally:
        monitor.stop()


def test_the_document_types_every_answer_and_closes_every_object(
        document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    untyped = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status == "101":
                    continue
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if not schema:
                    untyped.append(f"{method.upper()} {path} {status}")
                elif status.startswith(("4", "5")) and schema != {
                        "$ref": "#/components/schemas/Error"}:
                    untyped.append(f"{method.upper()} {path} {status}: not Error")
    assert untyped == []

    open_objects: list[str] = []
    for name, schema in document["components"]["schemas"].items():
        walk(schema, name, open_objects)
    assert open_objects == []
    # every schema compiles, refs resolved
    for schema in document["components"]["schemas"].values():
        schema_validator(document, schema)
    assert "nullable" not in str(document), "OpenAPI 3.1: null is a JSON Schema type"
    # instants are ISO 8601 UTC with milliseconds, as core/times.py writes them
    token = document["components"]["schemas"]["Token"]["properties"]
    assert token["expires_at"]["pattern"] == ISO_PATTERN


def walk(schema: Any, where: str, open_objects: list[str]) -> None:
    """Every object schema under ``schema`` says what else it allows."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            walk(item, f"{where}[{i}]", open_objects)
        return
    if not isinstance(schema, dict):
        return
    types = schema.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in schema:
        extra = schema.get("additionalProperties")
        if extra is not False and not (isinstance(extra, dict) and extra):
            open_objects.append(where)
    for key, value in schema.items():
        if key in ("properties", "items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            if key == "properties":
                for prop, sub in value.items():
                    walk(sub, f"{where}.{prop}", open_objects)
            else:
                walk(value, f"{where}/{key}", open_objects)
