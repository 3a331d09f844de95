"""Browsers connect to the live feed the first time.

A browser resends the Basic credentials of Flower's login on the WebSocket
upgrade; that upgrade is accepted and authenticated by its first message,
while a Bearer header keeps working and an invalid one is still a JSON 401
before the upgrade. The page works when its own URL carries credentials, and
a normal load logs nothing in the console. Real monitor and worker processes,
a real WebSocket client (websocket-client) and a real headless Chromium."""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from testing.processes import DEFAULT_BASIC_AUTH
from testing.services import RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

BASIC = "Basic " + base64.b64encode(DEFAULT_BASIC_AUTH.encode()).decode()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    with running_stack(broker_url=redis_service.url(redis_db)) as stack:
        yield stack


def open_feed(stack: Stack, *headers: str) -> websocket.WebSocket:
    return websocket.create_connection(stack.monitor.ws_url, timeout=10,
                                       suppress_origin=True, header=list(headers))


def receive(ws: websocket.WebSocket) -> dict[str, Any]:
    message = json.loads(ws.recv())
    assert isinstance(message, dict)
    return message


# -- the upgrade ---------------------------------------------------------------------------


def test_an_upgrade_with_basic_credentials_authenticates_by_its_first_message(
        stack: Stack) -> None:
    # the monitor knows the worker (its first heartbeat may still be on its way
    # right after start-up), so the snapshot must list it
    wait_for(lambda: any(w["hostname"] == stack.worker.hostname
                         for w in stack.get_json("/workers")["workers"]),
             timeout_seconds=30, message="the monitor knowing the worker")
    ws = open_feed(stack, f"Authorization: {BASIC}")
    try:
        ws.send(json.dumps({"type": "auth", "token": stack.token}))
        first = receive(ws)
        assert first["type"] == "snapshot"
        assert {"stats", "workers", "queues", "tasks", "alerts"} <= first.keys()
        assert any(w["hostname"] == stack.worker.hostname for w in first["workers"])
    finally:
        ws.close()


def test_basic_credentials_alone_grant_nothing_on_the_socket(stack: Stack) -> None:
    started = time.monotonic()
    ws = open_feed(stack, f"Authorization: {BASIC}")
    try:
        ws.settimeout(15)
        opcode, payload = ws.recv_data(control_frame=False)
        # Nothing is said to the unauthenticated peer: the socket just closes
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(payload[:2], "big") == 4001
        assert time.monotonic() - started >= 4
    finally:
        ws.close()


def test_basic_credentials_then_a_wrong_first_message_close_the_socket(stack: Stack) -> None:
    ws = open_feed(stack, f"Authorization: {BASIC}")
    try:
        ws.send(json.dumps({"type": "auth", "token": "not-a-jwt"}))
        opcode, payload = ws.recv_data(control_frame=False)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(payload[:2], "big") == 4001
    finally:
        ws.close()


def test_basic_credentials_from_another_origin_are_still_refused(stack: Stack) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(stack.monitor.ws_url, timeout=10,
                                    origin="http://evil.example",
                                    header=[f"Authorization: {BASIC}"])
    assert refused.value.status_code == 403
    assert json.loads(refused.value.resp_body or b"{}")["error"]


def test_a_bearer_header_still_authenticates_the_upgrade(stack: Stack) -> None:
    ws = open_feed(stack, f"Authorization: Bearer {stack.token}")
    try:
        assert receive(ws)["type"] == "snapshot"   # no auth message needed
    finally:
        ws.close()


@pytest.mark.parametrize("authorization", ["Bearer not-a-jwt", "Bearer ", "bearer x.y.z"])
def test_an_invalid_bearer_is_a_json_401_before_the_upgrade(stack: Stack,
                                                            authorization: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_feed(stack, f"Authorization: {authorization}")
    assert refused.value.status_code == 401
    body = json.loads(refused.value.resp_body or b"{}")
    assert body["error"] and "detail" in body


def test_a_plain_get_with_basic_credentials_is_still_an_api_401(stack: Stack) -> None:
    response = requests.get(stack.monitor.ws_url.replace("ws://", "http://", 1),
                            headers={"Authorization": BASIC}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]


# -- the page in a browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


class PageLog:
    """Everything a page said or failed at: console errors and warnings,
    uncaught exceptions, failed requests, and its WebSocket URLs."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.sockets: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        page.on("requestfailed",
                lambda request: self.problems.append(f"failed: {request.url} {request.failure}"))
        page.on("websocket", self._websocket)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console.{message.type}: {message.text}")

    def _websocket(self, ws: Any) -> None:
        self.sockets.append(ws.url)
        ws.on("socketerror", lambda error: self.problems.append(f"socketerror: {error}"))


def load_and_watch(context: BrowserContext, url: str) -> tuple[Page, PageLog]:
    page = context.new_page()
    log = PageLog(page)
    page.goto(url)
    expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live", timeout=20_000)
    expect(page.locator("#fo-workers [data-worker]").first).to_be_visible()
    # long enough for a refused first upgrade and its retry to show up
    page.wait_for_timeout(3_000)
    return page, log


@pytest.mark.browser
def test_a_normal_load_connects_first_time_and_logs_nothing(browser: Browser,
                                                            stack: Stack) -> None:
    user, _, password = DEFAULT_BASIC_AUTH.partition(":")
    context = browser.new_context(http_credentials={"username": user, "password": password})
    try:
        _, log = load_and_watch(context, f"{stack.monitor.base_url}/monitoring")
        assert log.problems == []
        assert len(log.sockets) == 1, log.sockets   # no refused first attempt, no retry
    finally:
        context.close()


@pytest.mark.browser
def test_the_page_works_when_its_url_carries_credentials(browser: Browser,
                                                         stack: Stack) -> None:
    port = stack.monitor.port
    context = browser.new_context()   # the credentials come from the URL only
    try:
        page, log = load_and_watch(
            context, f"http://{DEFAULT_BASIC_AUTH}@127.0.0.1:{port}/monitoring")
        assert log.problems == []
        assert log.sockets == [f"ws://127.0.0.1:{port}/api/automation/monitoring/ws"]
        # the token and the API calls work from such a page too: a task's details
        from testing.apps import automation

        result = automation.add.delay(20, 22)
        row = page.locator(f'#fo-tasks tr[data-task-id="{result.id}"]')
        expect(row).to_have_attribute("data-state", "SUCCESS", timeout=30_000)
        row.locator('[data-action="details"]').click()
        expect(page.locator('#fo-details [data-field="id"]')).to_have_text(result.id)
        assert log.problems == []
    finally:
        context.close()
