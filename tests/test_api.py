"""The read API end to end: a real `celery -A APP flower-ops` process, real
Celery workers, a real Redis broker, real JWTs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flower_ops.core.times import ISO_PATTERN, parse_instant
from testing.paths import REPO_ROOT
from testing.processes import AUTOMATION_APP, CeleryWorker, Monitor
from testing.services import RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    with running_stack(broker_url=redis_service.url(redis_db)) as stack:
        yield stack


def test_tasks_of_every_state_appear_with_their_fields(stack: Stack) -> None:
    from testing.apps import automation

    ok = automation.add.delay(2, 3)
    failed = automation.fail.delay("kaput")
    retried = automation.flaky.delay(succeed_on=2)
    long_running = automation.sleep.delay(4)

    done = stack.wait_state(ok.id, "SUCCESS")
    assert done["name"] == "automation.add"
    assert done["args"] == [2, 3] and done["args_exact"] is True
    assert done["result"] == 5
    assert done["worker"] == stack.worker.hostname
    assert done["queue"] == "celery" and done["routing_key"] == "celery"
    for field in ("sent", "received", "started", "succeeded"):
        assert re.fullmatch(ISO_PATTERN, done[field]), field
    at = {field: parse_instant(done[field]) for field in ("sent", "received", "started",
                                                          "succeeded")}
    # task-sent is emitted after publishing, so a worker may receive first
    assert abs(at["sent"] - at["received"]) < 5
    assert at["received"] <= at["started"] <= at["succeeded"]
    assert done["runtime"] >= 0 and round(done["runtime"], 3) == done["runtime"]
    assert [step["state"] for step in done["history"]] == [
        "PENDING", "RECEIVED", "STARTED", "SUCCESS"]

    failure = stack.wait_state(failed.id, "FAILURE")
    assert "kaput" in failure["exception"]
    assert "ValueError" in failure["traceback"]
    assert failure["failed"] is not None

    running = stack.wait_state(long_running.id, "STARTED")
    assert running["started"] is not None and running["succeeded"] is None

    # A retried task goes through RETRY, then succeeds on its second attempt
    final = stack.wait_state(retried.id, "SUCCESS")
    assert final["retried"] is not None and final["retries"] == 1

    revoked = automation.sleep.delay(60)
    stack.wait_state(revoked.id, "STARTED")
    stack.app.control.revoke(revoked.id, terminate=True)
    gone = stack.wait_state(revoked.id, "REVOKED")
    assert gone["revoked"] is not None

    listing = stack.get_json("/tasks", state="FAILURE")
    assert failed.id in [t["id"] for t in listing["tasks"]]
    assert all(t["state"] == "FAILURE" for t in listing["tasks"])
    assert listing["total"] == len(listing["tasks"])

    by_name = stack.get_json("/tasks", name="automation.add", worker=stack.worker.hostname)
    assert [t["id"] for t in by_name["tasks"]] == [ok.id]

    stats = stack.get_json("/stats")
    assert set(STATES) <= set(stats["tasks"]["by_state"])
    for state in ("SUCCESS", "FAILURE", "REVOKED"):
        assert stats["tasks"]["by_state"][state] >= 1
    assert stats["tasks"]["total"] == sum(stats["tasks"]["by_state"].values())
    assert stats["throughput"]["1m"] > 0
    assert stats["runtime"]["automation.add"]["count"] >= 1
    assert stats["capabilities"]["exact_args"] is True
    stack.wait_state(long_running.id, "SUCCESS")


def test_listing_paginates_with_cursor(stack: Stack) -> None:
    from testing.apps import automation

    marker = uuid.uuid4().hex
    ids = [automation.echo.delay(marker, i).id for i in range(7)]
    for task_id in ids:
        stack.wait_state(task_id, "SUCCESS")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"search": marker, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = stack.get_json("/tasks", **params)
        assert page["total"] == 7
        seen.extend(t["id"] for t in page["tasks"])
        cursor = page["next"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    oldest_first = stack.get_json("/tasks", search=marker, order="asc", limit=10)
    assert [t["id"] for t in oldest_first["tasks"]] == list(reversed(seen))


def test_workers_online_then_offline(stack: Stack) -> None:
    extra = CeleryWorker(stack.broker_url, queues=("celery",), concurrency=1).start()
    try:
        extra.wait_ready(stack.app)

        def listed(status: str) -> dict[str, Any] | None:
            workers = stack.get_json("/workers")["workers"]
            match = [w for w in workers if w["hostname"] == extra.hostname]
            return match[0] if match and match[0]["status"] == status else None

        online = wait_for(lambda: listed("online"), message="worker online")
        assert re.fullmatch(ISO_PATTERN, online["last_heartbeat"])

        def inspected() -> dict[str, Any] | None:
            # stats and active_queues replies arrive (or time out) independently;
            # a missed one is filled by the next inspect round
            worker = listed("online")
            if worker and worker["pool"]["implementation"] and worker["queues"]:
                return worker
            return None

        detail = wait_for(inspected, message="inspect data cached", timeout_seconds=30)
        assert detail["max_concurrency"] == 1
        assert detail["queues"] == ["celery"]
        assert detail["memory"]["rss_bytes"] > 0
    finally:
        extra.stop()
    wait_for(lambda: listed("offline"), message="worker offline")
    assert stack.get_json("/stats")["workers"]["offline"] >= 1


def test_queues_count_unconsumed_messages_including_priority_subqueues(stack: Stack) -> None:
    from testing.apps import automation

    queue = f"idle-{uuid.uuid4().hex[:6]}"
    for priority in (0, 0, 5, 9, 9, 9):
        automation.add.apply_async((1, 1), queue=queue, priority=priority)

    def counted() -> dict[str, Any] | None:
        queues = {q["name"]: q for q in stack.get_json("/queues")["queues"]}
        entry = queues.get(queue)
        return entry if entry and entry["messages"] == 6 else None

    entry = wait_for(counted, message=f"queue {queue} counted")
    assert entry["by_priority"] == {"0": 2, "3": 1, "9": 3}
    assert entry["consumers"] == 0
    assert entry["unacked"] == 0
    assert entry["oldest_message_age_seconds"] is not None
    assert entry["oldest_message_age_seconds"] >= 0
    assert stack.get_json("/stats")["queues"]["messages"] >= 6


def test_stock_flower_keeps_working(stack: Stack) -> None:
    base = stack.monitor.base_url
    auth = stack.monitor.basic_auth
    assert requests.get(f"{base}/", timeout=5).status_code == 401
    for path in ("/", "/tasks", "/broker", "/api/workers", "/api/tasks?limit=5", "/metrics",
                 "/healthcheck"):
        response = requests.get(f"{base}{path}", auth=auth, timeout=10)
        assert response.status_code == 200, path
    metrics = requests.get(f"{base}/metrics", auth=auth, timeout=10).text
    assert "flower_events_total" in metrics


def test_api_requires_a_bearer_token(stack: Stack) -> None:
    api = stack.monitor.api
    for headers in ({}, {"Authorization": "Basic YWRtaW46YWRtaW4xMjM="},
                    {"Authorization": "Bearer not-a-jwt"}):
        response = requests.get(f"{api}/stats", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["Content-Type"].startswith("application/json")
        assert "error" in response.json()
    read_only = stack.monitor.token(scopes="monitoring:read")
    response = requests.get(f"{api}/stats", headers={"Authorization": f"Bearer {read_only}"},
                            timeout=5)
    assert response.status_code == 200


def test_token_endpoint_takes_flower_credentials_only(stack: Stack) -> None:
    url = f"{stack.monitor.api}/token"
    assert requests.post(url, timeout=5).status_code == 401
    assert requests.post(url, auth=("admin", "wrong"), timeout=5).status_code == 401
    cross = requests.post(url, auth=stack.monitor.basic_auth, timeout=5,
                          headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    too_much = requests.post(url, auth=stack.monitor.basic_auth, json={"scopes": "admin:all"},
                             timeout=5)
    assert too_much.status_code == 403
    good = requests.post(url, auth=stack.monitor.basic_auth, json={"scopes": ["monitoring:read"]},
                         timeout=5)
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "monitoring:read"
    assert body["subject"] == "admin" and 0 < body["expires_in"] <= 3600
    assert re.fullmatch(ISO_PATTERN, body["expires_at"])


@pytest.mark.parametrize("path, params, status", [
    ("/tasks", {"limit": "abc"}, 400),
    ("/tasks", {"limit": "0"}, 400),
    ("/tasks", {"limit": "1001"}, 400),
    ("/tasks", {"state": "EXPLODED"}, 400),
    ("/tasks", {"cursor": "zzz"}, 400),
    ("/tasks", {"cursor": "m-1"}, 400),
    ("/tasks", {"since": "yesterday"}, 400),
    ("/tasks", {"since": "nan"}, 400),
    ("/tasks", {"since": "20", "until": "10"}, 400),
    ("/tasks", {"order": "sideways"}, 400),
    ("/tasks", {"search": "x" * 300}, 400),
    ("/tasks", {"name": "a\x00b"}, 400),  # read as sent: a NUL is bad input
    ("/tasks", {"source": "db"}, 503),
    ("/tasks/" + "x" * 300, {}, 400),
    ("/tasks/%E2%98%83%00", {}, 400),
    ("/tasks/no-such-task", {}, 404),
    ("/nope", {}, 404),
    ("/tasks/a/b/c/d", {}, 404),
])
def test_bad_requests_get_json_errors(stack: Stack, path: str, params: dict[str, str],
                                      status: int) -> None:
    response = stack.get(path, **params)
    assert response.status_code == status, response.text
    body = response.json()
    if status >= 400:
        assert set(body) == {"error", "detail"} and body["error"]


def test_wrong_methods_and_bodies_get_json_errors(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    response = requests.delete(f"{stack.monitor.api}/stats", headers=headers, timeout=5)
    assert response.status_code in (403, 405) and "error" in response.json()
    response = requests.post(f"{stack.monitor.api}/token", auth=stack.monitor.basic_auth,
                             data=b"\xff{not json", timeout=5)
    assert response.status_code == 400 and "error" in response.json()
    response = requests.post(f"{stack.monitor.api}/token", auth=stack.monitor.basic_auth,
                             data=b"x" * (2 * 1024 * 1024), timeout=10)
    assert response.status_code in (400, 413)


def test_openapi_document_describes_every_route(stack: Stack) -> None:
    document = requests.get(f"{stack.monitor.api}/openapi.json", timeout=5).json()
    assert document["openapi"].startswith("3.")
    paths = set(document["paths"])
    assert {"/stats", "/tasks", "/tasks/{task_id}", "/workers", "/queues", "/token"} <= paths
    assert document["servers"] == [{"url": "/api/automation/monitoring"}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            success = {"101"} if path == "/ws" else {"200"}
            assert success <= set(operation["responses"]), (path, method)


def test_routes_honour_url_prefix(redis_url: str) -> None:
    monitor = Monitor(redis_url, url_prefix="flower").start()
    try:
        monitor.wait_ready()
        token = monitor.token()
        response = requests.get(f"http://127.0.0.1:{monitor.port}/flower/api/automation/monitoring"
                                "/stats", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert response.status_code == 200 and "tasks" in response.json()
        document = requests.get(f"{monitor.api}/openapi.json", timeout=5).json()
        assert document["servers"] == [{"url": "/flower/api/automation/monitoring"}]
        flower_page = requests.get(f"http://127.0.0.1:{monitor.port}/flower/",
                                   auth=monitor.basic_auth, timeout=5)
        assert flower_page.status_code == 200
    finally:
        monitor.stop()


@pytest.mark.parametrize("variable, value", [
    ("FLOWER_OPS_TOKEN_TTL_SECONDS", "soon"),
    ("DATABASE_URL", "mysql://nope"),
    ("JWT_ALGORITHMS", "none"),
    ("FLOWER_OPS_QUEUE_REFRESH_SECONDS", "-1"),
])
def test_bad_setting_stops_startup_naming_the_variable(redis_url: str, variable: str,
                                                       value: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO_ROOT), variable: value}
    result = subprocess.run([sys.executable, "-m", "celery", "-A", AUTOMATION_APP,
                             "flower-ops", "--port=0"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert variable in result.stderr
    assert len([line for line in result.stderr.splitlines() if variable in line]) == 1
