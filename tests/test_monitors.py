"""Several monitors as one (issue #14): two real `celery flower-ops` monitors on
one Redis and one PostgreSQL, sharing FLOWER_OPS_TOKEN_SECRET, a real worker
and the sync worker; and, for the tests marked so, a real nginx (Debian's
/usr/sbin/nginx, run as this user with the shipped deploy/nginx/flower-ops.conf)
balancing them round robin, in front of a real WebSocket client and Chromium.

nginx missing: those tests skip, or fail with FLOWER_OPS_TEST_REQUIRE_NGINX=1.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import websocket
from playwright.sync_api import Browser, expect, sync_playwright

from flower_ops.demo.embedded import free_port
from testing.paths import REPO_ROOT
from testing.processes import Monitor, Process
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for
from testing.webhook import WebhookReceiver

pytestmark = pytest.mark.timeout(240)

NGINX = "/usr/sbin/nginx"
SECRET = secrets.token_urlsafe(40)
MONITOR_ENV = {**FAST_MONITOR_REFRESH, "FLOWER_OPS_TOKEN_SECRET": SECRET,
               "FLOWER_OPS_CANCEL_CONFIRM_SECONDS": "1"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]


class Pair:
    """The stack's monitor (a) and a second one (b) on the same broker and database."""

    def __init__(self, stack: Stack, second: Monitor) -> None:
        self.stack = stack
        self.a = stack.monitor
        self.b = second

    def post(self, api: str, path: str, token: str, body: Any = None,
             key: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return requests.post(f"{api}{path}", json=body if body is not None else {},
                             headers=headers, timeout=60)

    def failed_task(self, message: str) -> str:
        """A failed task, known to both monitors and to PostgreSQL."""
        from testing.apps import automation

        task_id = automation.fail.delay(message).id
        self.stack.wait_status(task_id, "failure")
        token = self.a.token()
        for monitor in (self.a, self.b):
            wait_for(lambda m=monitor: requests.get(  # type: ignore[misc]
                f"{m.api}/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"},
                timeout=10).json().get("state") == "FAILURE",
                timeout_seconds=30, message=f"{task_id} FAILURE on {monitor.port}")
        return task_id

    def audited(self, task_id: str, action: str, outcome: str) -> int:
        return sum(1 for _, a, o in self.stack.audit(task_id) if (a, o) == (action, outcome))


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def pair(redis_service: RedisService, redis_db: int, pg_service: PostgresService,
         webhook: WebhookReceiver) -> Iterator[Pair]:
    name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(name),
                           monitor_env={**MONITOR_ENV,
                                        "FLOWER_OPS_ALERT_WEBHOOK_URL": webhook.url},
                           sync_env=FAST_SYNC_WORKER) as stack:
            second = Monitor(stack.broker_url, env=stack.monitor_env).start()
            try:
                second.wait_ready()
                yield Pair(stack, second)
            finally:
                second.stop()
    finally:
        pg_service.drop_database(name)


# -- nginx, run as this user -----------------------------------------------------------------


def nginx_config(shipped: str, upstreams: list[int], port: int, root: Path) -> str:
    """The shipped config with our monitors as its upstream servers, in a
    whole nginx.conf whose pid, logs and temporary files stay in ``root``."""
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n"
                      for p in upstreams)
    text = re.sub(r"(?m)^    server \S+:5555 .*\n", "", shipped)
    text = text.replace("    keepalive 16;\n", servers + "    keepalive 16;\n")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    temp = "".join(f"    {kind}_temp_path {root}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log info;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n    access_log {root}/access.log;\n{temp}{text}\n}}\n")


class Nginx(Process):
    def __init__(self, upstreams: list[int]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="flower-ops-nginx-"))
        self.port = free_port()
        shipped = (REPO_ROOT / "deploy" / "nginx" / "flower-ops.conf").read_text()
        conf = self.root / "nginx.conf"
        conf.write_text(nginx_config(shipped, upstreams, self.port, self.root))
        super().__init__([NGINX, "-p", str(self.root), "-e", str(self.root / "error.log"),
                          "-c", str(conf), "-g", "daemon off;"], {}, "nginx")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/automation/monitoring"

    def wait_ready(self) -> Nginx:
        def up() -> bool:
            if not self.alive():
                raise self._exited_error("nginx")
            try:
                return requests.get(f"{self.base_url}/healthcheck", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout_seconds=20, message="nginx in front of the monitors")
        return self


@pytest.fixture(scope="module")
def nginx(pair: Pair) -> Iterator[Nginx]:
    if not os.access(NGINX, os.X_OK):
        message = f"{NGINX} not installed (apt-get install nginx-light)"
        if os.environ.get("FLOWER_OPS_TEST_REQUIRE_NGINX") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    proxy = Nginx([pair.a.port, pair.b.port]).start()
    try:
        yield proxy.wait_ready()
    finally:
        proxy.stop()


def feed(url: str, token: str, query: str = "") -> websocket.WebSocket:
    return websocket.create_connection(f"{url}{query}", timeout=15,
                                       header=[f"Authorization: Bearer {token}"])


def receive(conn: websocket.WebSocket) -> dict[str, Any]:
    return dict(json.loads(conn.recv()))


# -- one key -------------------------------------------------------------------------------


def test_a_token_from_one_monitor_is_valid_on_the_other(pair: Pair) -> None:
    for issuer, other in ((pair.a, pair.b), (pair.b, pair.a)):
        response = requests.get(f"{other.api}/stats", timeout=10,
                                headers={"Authorization": f"Bearer {issuer.token()}"})
        assert response.status_code == 200, response.text


def alerts_of(monitor: Monitor, kind: str = "monitor_key_mismatch") -> list[dict[str, Any]]:
    response = requests.get(f"{monitor.api}/alerts", params={"kind": kind}, timeout=10,
                            headers={"Authorization": f"Bearer {monitor.token()}"})
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


@pytest.mark.parametrize("secret", [None, "another-secret-" + "x" * 32])
def test_a_monitor_with_another_key_says_so_at_start_up(pair: Pair, secret: str | None) -> None:
    """It runs (a refusal would make a restart on another port a crash loop
    while the old registration lives), and says at once what to set."""
    env = {k: v for k, v in pair.stack.monitor_env.items() if k != "FLOWER_OPS_TOKEN_SECRET"}
    if secret is not None:
        env["FLOWER_OPS_TOKEN_SECRET"] = secret
    third = Monitor(pair.stack.broker_url, env=env).start()
    try:
        third.wait_ready()
        output = third.output()
        group = pair.stack.monitor_env["FLOWER_OPS_MONITOR_GROUP"]
        assert f"flower-ops: FLOWER_OPS_TOKEN_SECRET: another monitor of group {group!r} is "\
               "running" in output
        alerts = alerts_of(third)
        assert {a["details"]["port"] for a in alerts} >= {pair.a.port, pair.b.port}
        assert {a["severity"] for a in alerts} == {"critical"}
        # and the two already running see it at their next heartbeat
        wait_for(lambda: len(alerts_of(pair.a)) >= 1, timeout_seconds=30,
                 message="the running monitor's alert about the third")
    finally:
        third.stop()
    wait_for(lambda: not alerts_of(pair.a), timeout_seconds=30,
             message="the alert resolved once the third is gone")


def test_without_a_database_the_check_goes_through_the_redis_broker(
        redis_service: RedisService) -> None:
    db = redis_service.claim_db()
    try:
        one_group = {"FLOWER_OPS_MONITOR_GROUP": "default"}
        first = Monitor(redis_service.url(db), env=one_group).start()
        try:
            first.wait_ready()
            # without a database, Idempotency-Key answers are kept in memory
            headers = {"Authorization": f"Bearer {first.token()}", "Idempotency-Key": "k1"}
            answers = [requests.post(f"{first.api}/tasks/no-such/cancel", json={},
                                     headers=headers, timeout=10) for _ in range(2)]
            assert [a.status_code for a in answers] == [404, 404]
            assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true"]
            second = Monitor(redis_service.url(db), env=one_group).start()
            try:
                second.wait_ready()
                assert "FLOWER_OPS_TOKEN_SECRET" in second.output()
                assert "signs its tokens with a random per-process secret" in second.output()
                assert [a["details"]["port"] for a in alerts_of(second)] == [first.port]
            finally:
                second.stop()
        finally:
            first.stop()
        # a clean exit deregisters: the next one sees nobody
        third = Monitor(redis_service.url(db), env=one_group).start()
        try:
            third.wait_ready()
            assert alerts_of(third) == []
            assert "another monitor of group" not in third.output()
        finally:
            third.stop()
    finally:
        redis_service.client(db).flushdb()
        redis_service.release_db(db)


def test_a_monitor_killed_then_started_on_another_port_is_no_peer(
        redis_service: RedisService) -> None:
    """A kill -9 leaves its registration for up to 15 s; the next monitor on
    this host sees that its process is gone: no message, no alert."""
    db = redis_service.claim_db()
    one_group = {"FLOWER_OPS_MONITOR_GROUP": "default"}
    try:
        first = Monitor(redis_service.url(db), env=one_group).start().wait_ready()
        first.kill()
        keys = redis_service.client(db).keys("flower-ops:monitors:default:*")
        assert len(keys) == 1     # still registered: it could not deregister
        second = Monitor(redis_service.url(db), env=one_group).start()
        try:
            second.wait_ready()
            assert second.port != first.port
            assert alerts_of(second) == []
            assert "another monitor of group" not in second.output()
            assert len(redis_service.client(db).keys("flower-ops:monitors:default:*")) == 1
        finally:
            second.stop()
    finally:
        redis_service.client(db).flushdb()
        redis_service.release_db(db)


def test_a_peer_with_another_key_seen_later_is_an_alert_until_it_is_gone(
        pair: Pair, webhook: WebhookReceiver) -> None:
    """Two monitors that start at the same moment do not see each other at
    start-up; the first heartbeat does: a critical alert, and an error logged.
    Both monitors raise it; the webhook hears it raised once, resolved once."""
    headers = {"Authorization": f"Bearer {pair.a.token()}"}

    def active(monitor: Monitor = pair.a) -> list[dict[str, Any]]:
        return list(requests.get(f"{monitor.api}/alerts", params={"kind": "monitor_key_mismatch"},
                                 headers=headers, timeout=10).json()["alerts"])

    def hooked() -> list[str]:
        return [e["event"] for e in list(webhook.received)
                if e["alert"]["kind"] == "monitor_key_mismatch"
                and e["alert"]["subject"] == "rogue"]

    def left_to_peers() -> int:
        return sum(requests.get(f"{m.api}/alerts", headers=headers, timeout=10).json()
                   ["webhook"]["left_to_peers"] for m in (pair.a, pair.b))

    skipped = left_to_peers()

    database = pair.stack.require_database_url()
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO automation.monitors (instance_id, monitor_group, host, pid, "
                     "port, version, key_fingerprint, heartbeat_at) VALUES ('rogue', %s, "
                     "'elsewhere', 7, 5555, '0', 'another', now() + interval '10 minutes')",
                     (pair.stack.monitor_env["FLOWER_OPS_MONITOR_GROUP"],))
    try:
        alerts = wait_for(active, timeout_seconds=30, message="a monitor_key_mismatch alert")
        wait_for(lambda: active(pair.b), timeout_seconds=30, message="the same alert on b")
        assert [(a["subject"], a["severity"]) for a in alerts] == [("rogue", "critical")]
        assert alerts[0]["details"]["setting"] == "FLOWER_OPS_TOKEN_SECRET"
        assert "elsewhere:5555" in alerts[0]["message"]
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DELETE FROM automation.monitors WHERE instance_id = 'rogue'")
    wait_for(lambda: not active() and not active(pair.b), timeout_seconds=30,
             message="the alert resolved on both monitors")
    assert "tokens from one monitor fail on the other" in pair.a.output()
    wait_for(lambda: hooked() == ["raised", "resolved"], timeout_seconds=15,
             message="the webhook told of the alert raised, then resolved")
    # both monitors raised and resolved it; the second copy of each was skipped
    time.sleep(3)
    assert hooked() == ["raised", "resolved"]
    assert left_to_peers() >= skipped + 2


# -- actions: once, audited once ---------------------------------------------------------------


def test_two_monitors_retrying_one_task_at_once_send_one_new_task(pair: Pair) -> None:
    token = pair.a.token()
    for n in range(2):
        task_id = pair.failed_task(f"race {n}")
        with ThreadPoolExecutor(2) as pool:
            path = f"/tasks/{task_id}/retry"
            answers = list(pool.map(lambda api, p=path: pair.post(api, p, token),
                                    (pair.a.api, pair.b.api)))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        won = next(a.json() for a in answers if a.status_code == 200)
        lost = next(a.json() for a in answers if a.status_code == 409)
        assert lost["detail"]["reason"] == "already_retried"
        assert lost["detail"]["retried_as"] == won["new_id"]
        assert pair.audited(task_id, "retry", "retried") == 1
        assert pair.stack.row(task_id)["retried_as"] == won["new_id"]  # type: ignore[index]


def test_two_monitors_cancelling_one_queued_task_at_once_cancel_it_once(pair: Pair) -> None:
    from testing.apps import automation

    token = pair.a.token()
    task_id = automation.echo.apply_async(("parked",), queue="nobody-consumes").id
    for monitor in (pair.a, pair.b):
        wait_for(lambda m=monitor: requests.get(  # type: ignore[misc]
            f"{m.api}/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"},
            timeout=10).status_code == 200, timeout_seconds=30, message="the queued task")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda api: pair.post(api, f"/tasks/{task_id}/cancel", token),
                                (pair.a.api, pair.b.api)))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    lost = next(a.json() for a in answers if a.status_code == 409)
    assert lost["detail"]["state"] == "REVOKED"
    assert pair.audited(task_id, "cancel", "cancelled") == 1


def test_an_idempotency_key_is_answered_the_same_on_the_other_monitor(pair: Pair) -> None:
    token = pair.a.token()
    task_id = pair.failed_task("idempotent")
    key = secrets.token_hex(16)
    first = pair.post(pair.a.api, f"/tasks/{task_id}/retry", token, key=key)
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = pair.post(pair.b.api, f"/tasks/{task_id}/retry", token, key=key)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [o for _, a, o in pair.stack.audit(task_id) if a == "retry"] == ["retried"]
    other = pair.post(pair.b.api, f"/tasks/{task_id}/retry", token, {"force": True}, key=key)
    assert other.status_code == 422, other.text
    assert other.json()["detail"]["reason"] == "idempotency_key_reused"


# -- the feed: seqs are one monitor's ------------------------------------------------------


def first_snapshot(url: str, token: str) -> dict[str, Any]:
    conn = feed(url, token)
    try:
        return receive(conn)
    finally:
        conn.close()


def test_a_resume_on_the_other_monitor_gets_a_snapshot_with_resync(pair: Pair) -> None:
    """Each monitor numbers its own messages (from its start time in ms), so
    a seq from one can fall in what the other holds for replay: the instance
    tells them apart."""
    token = pair.a.token()
    on_a = first_snapshot(pair.a.ws_url, token)
    on_b = first_snapshot(pair.b.ws_url, token)
    assert on_a["type"] == on_b["type"] == "snapshot"
    assert on_a["instance"] and on_b["instance"] and on_a["instance"] != on_b["instance"]
    # b holds its own seq on_b["seq"]: a client of a with that number is not b's
    elsewhere = feed(pair.b.ws_url, token, f"?resume={on_b['seq']}&instance={on_a['instance']}")
    try:
        answer = receive(elsewhere)
        assert answer["type"] == "snapshot" and answer["resync"] is True
        assert answer["instance"] == on_b["instance"]
    finally:
        elsewhere.close()
    here = feed(pair.b.ws_url, token, f"?resume={on_b['seq']}&instance={on_b['instance']}")
    try:
        message = receive(here)
        while message["type"] != "resumed":
            assert message["type"] in ("tasks", "alert"), message
            message = receive(here)
        assert message["instance"] == on_b["instance"]
    finally:
        here.close()


# -- through nginx (round robin) ------------------------------------------------------------------


def test_a_token_from_one_monitor_works_through_nginx(pair: Pair, nginx: Nginx) -> None:
    token = pair.a.token()
    for _ in range(4):   # round robin: both monitors answer
        response = requests.get(f"{nginx.api}/stats", timeout=10,
                                headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
    issued = requests.post(f"{nginx.api}/token", json={}, auth=pair.a.basic_auth, timeout=10)
    assert issued.status_code == 200, issued.text
    for monitor in (pair.a, pair.b):
        response = requests.get(f"{monitor.api}/stats", timeout=10, headers={
            "Authorization": f"Bearer {issued.json()['access_token']}"})
        assert response.status_code == 200, response.text


def test_actions_through_nginx_are_done_once(pair: Pair, nginx: Nginx) -> None:
    token = pair.a.token()
    task_id = pair.failed_task("through nginx")
    first = pair.post(nginx.api, f"/tasks/{task_id}/retry", token)
    second = pair.post(nginx.api, f"/tasks/{task_id}/retry", token)
    assert (first.status_code, second.status_code) == (200, 409), second.text
    assert second.json()["detail"]["retried_as"] == first.json()["new_id"]
    other = pair.failed_task("replayed through nginx")
    key = secrets.token_hex(16)
    answers = [pair.post(nginx.api, f"/tasks/{other}/retry", token, key=key) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert all(a.json() == answers[0].json() for a in answers)
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
    for task in (task_id, other):
        assert pair.audited(task, "retry", "retried") == 1


def test_the_feed_through_nginx(pair: Pair, nginx: Nginx) -> None:
    from testing.apps import automation

    token = pair.a.token()
    ws_url = nginx.api.replace("http://", "ws://") + "/ws"
    conn = feed(ws_url, token)
    try:
        snapshot = receive(conn)
        assert snapshot["type"] == "snapshot"
        task_id = automation.add.delay(40, 2).id
        message = receive(conn)
        while not any(t["id"] == task_id and t["state"] == "SUCCESS"
                      for t in message.get("tasks", [])):
            message = receive(conn)
    finally:
        conn.close()
    # Reconnect with a seq the other monitor holds too, until round robin lands
    # there: a snapshot with resync, not its own messages after that seq
    others = [first_snapshot(m.ws_url, token) for m in (pair.a, pair.b)]
    other = next(s for s in others if s["instance"] != snapshot["instance"])
    for _ in range(4):
        again = feed(ws_url, token, f"?resume={other['seq']}&instance={snapshot['instance']}")
        try:
            first = receive(again)
        finally:
            again.close()
        if first.get("instance", snapshot["instance"]) != snapshot["instance"]:
            assert first["type"] == "snapshot" and first["resync"] is True, first
            return
    pytest.fail("four reconnects through nginx never reached the other monitor")


@pytest.mark.browser
def test_the_page_through_nginx_round_robin(pair: Pair, nginx: Nginx,
                                            chromium_path: str) -> None:
    from testing.apps import automation

    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(executable_path=chromium_path,
                                                      args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(http_credentials={"username": "admin",
                                                            "password": "admin123"},
                                          viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{nginx.base_url}/monitoring")
            expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live")
            task_id = automation.add.delay(1, 2).id
            expect(page.locator(f'#fo-tasks tr[data-task-id="{task_id}"]')) \
                .to_have_attribute("data-state", "SUCCESS")
            # the token the page got through nginx serves both monitors' API
            page.reload()
            expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live")
            assert errors == []
        finally:
            browser.close()
