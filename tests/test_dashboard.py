"""The /monitoring page in a real headless Chromium (Playwright), against a real
`celery -A APP flower-ops` process and a real Celery worker."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from testing.services import RedisService
from testing.stack import Stack, running_stack

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"
XSS_FLAG = "<img src=x onerror=window.__xss=1>"


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    with running_stack(broker_url=redis_service.url(redis_db)) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


class Dashboard:
    def __init__(self, page: Page, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.dialogs: list[str] = []
        self.csp_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.csp_errors.append(message.text)

    def open(self) -> Dashboard:
        self.page.goto(f"{self.stack.monitor.base_url}/monitoring")
        self.expect_connection("live")
        return self

    def expect_connection(self, state: str, timeout_ms: float = 20_000) -> None:
        expect(self.page.locator("#fo-conn")).to_have_attribute("data-state", state,
                                                                 timeout=timeout_ms)

    def row(self, task_id: str) -> Any:
        return self.page.locator(f'#fo-tasks tr[data-task-id="{task_id}"]')

    def confirm(self, *words: str) -> None:
        """The confirmation names the task and the effect; confirm it."""
        dialog = self.page.locator("#fo-confirm")
        expect(dialog).to_be_visible()
        for word in words:
            expect(dialog).to_contain_text(word)
        dialog.locator("[data-confirm]").click()
        expect(dialog).to_be_hidden()

    def expect_state(self, task_id: str, state: str, timeout_ms: float = 30_000) -> None:
        expect(self.row(task_id)).to_have_attribute("data-state", state, timeout=timeout_ms)


def assert_no_bad_times(text: str) -> None:
    """Times (ISO 8601 strings in the API) parsed as times, not as numbers."""
    assert "NaN" not in text and "Invalid Date" not in text, text


@pytest.fixture
def dashboard(browser: Browser, stack: Stack) -> Iterator[Dashboard]:
    context = browser.new_context(http_credentials={"username": "admin",
                                                    "password": "admin123"})
    page = context.new_page()
    page.set_default_timeout(20_000)
    board = Dashboard(page, stack)
    try:
        yield board
        assert board.csp_errors == []
    finally:
        context.close()


def test_flower_pages_get_a_monitoring_entry_in_their_navbar(dashboard: Dashboard) -> None:
    page = dashboard.page
    base = dashboard.stack.monitor.base_url
    for path in ("/workers", "/tasks", "/broker"):
        page.goto(base + path)
        expect(page.locator("nav a.nav-link", has_text="Monitoring")).to_be_visible()
    page.locator("nav a.nav-link", has_text="Monitoring").click()
    page.wait_for_url(f"{base}/monitoring")
    link = page.locator("nav a.nav-link", has_text="Monitoring")
    expect(link).to_have_class("nav-link active")
    dashboard.expect_connection("live")
    # Flower's own look: its bundled Bootstrap and stylesheet, nothing remote
    hrefs = page.eval_on_selector_all("link[rel=stylesheet]", "els => els.map(e => e.href)")
    assert any("bootstrap.min.css" in h for h in hrefs)
    assert all(h.startswith(base.split("/monitoring")[0]) for h in hrefs)


def test_the_page_requires_flower_credentials(browser: Browser, stack: Stack) -> None:
    context = browser.new_context()
    try:
        response = context.request.get(f"{stack.monitor.base_url}/monitoring")
        assert response.status == 401
        assert "fo-app" not in response.text()
    finally:
        context.close()


def test_a_new_task_appears_within_two_seconds(dashboard: Dashboard) -> None:
    from testing.apps import automation

    dashboard.open()
    expect(dashboard.page.locator("#fo-workers [data-worker]").first).to_be_visible()
    started = time.monotonic()
    result = automation.add.delay(40, 2)
    expect(dashboard.row(result.id)).to_be_attached(timeout=2_000)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    dashboard.expect_state(result.id, "SUCCESS")
    row = dashboard.row(result.id)
    expect(row.locator('[data-col="name"]')).to_have_text("automation.add")
    expect(row.locator('[data-col="args"]')).to_contain_text("[40,2]")
    expect(dashboard.page.locator('#fo-queues tr[data-queue="celery"]')).to_be_visible()
    # times arrive as ISO 8601 strings and are shown as times, never NaN
    time_text = row.locator('[data-col="time"]').inner_text()
    assert re.fullmatch(r".*\d+:\d\d:\d\d.*\.\d{3}", time_text), time_text
    assert_no_bad_times(dashboard.page.locator("#fo-app").inner_text())


def test_cancel_and_retry_from_the_buttons(dashboard: Dashboard) -> None:
    from testing.apps import automation

    dashboard.open()
    running = automation.sleep.delay(60)
    dashboard.expect_state(running.id, "STARTED")
    row = dashboard.row(running.id)
    expect(row.locator('[data-action="retry"]')).to_be_disabled()
    row.locator('[data-action="cancel"]').click()
    dashboard.confirm(running.id, "terminated")
    dashboard.expect_state(running.id, "REVOKED")
    expect(dashboard.page.locator("#fo-notices")).to_contain_text(f"Cancelled {running.id}")
    # the outcome is also told next to the button pressed
    expect(row.locator(".fo-feedback")).to_contain_text(f"Cancelled {running.id}")
    expect(row.locator('[data-action="cancel"]')).to_be_disabled()

    row.locator('[data-action="retry"]').click()
    notice = dashboard.page.locator("#fo-notices .alert", has_text=f"Retried {running.id} as")
    expect(notice).to_be_visible()
    new_id = notice.inner_text().split(" as ", 1)[1].split()[0].strip()
    assert new_id and new_id != running.id
    dashboard.expect_state(new_id, "STARTED")
    # the retry runs with the exact original arguments
    expect(dashboard.row(new_id).locator('[data-col="args"]')).to_contain_text("[60]")
    dashboard.row(new_id).locator('[data-action="cancel"]').click()
    dashboard.confirm(new_id, "terminated")
    dashboard.expect_state(new_id, "REVOKED")


def test_details_show_everything_including_history(dashboard: Dashboard) -> None:
    from testing.apps import automation

    dashboard.open()
    failed = automation.fail.delay("details please")
    dashboard.expect_state(failed.id, "FAILURE")
    dashboard.row(failed.id).locator('[data-action="details"]').click()
    modal = dashboard.page.locator("#fo-details")
    expect(modal).to_be_visible()
    expect(modal.locator('[data-field="id"]')).to_have_text(failed.id)
    expect(modal.locator('[data-field="name"]')).to_have_text("automation.fail")
    expect(modal.locator('[data-field="state"]')).to_have_text("FAILURE")
    expect(modal.locator('[data-field="worker"]')).to_have_text(dashboard.stack.worker.hostname)
    expect(modal).to_contain_text("ValueError")  # traceback
    expect(modal).to_contain_text("details please")
    history = modal.locator('[data-testid="fo-history"] tr')
    expect(history).to_have_count(4)
    expect(history.last).to_contain_text("FAILURE")
    expect(modal.locator('[data-field="failed"]')).to_have_text(re.compile(r"\d"))
    assert_no_bad_times(modal.inner_text())
    for step in history.all():
        assert re.search(r"\d+:\d\d:\d\d", step.inner_text()), step.inner_text()


def test_task_data_is_rendered_as_text_never_as_markup(dashboard: Dashboard) -> None:
    from testing.apps import automation

    dashboard.open()
    result = automation.echo.delay(XSS, XSS_FLAG, note=XSS)
    dashboard.expect_state(result.id, "SUCCESS")
    row = dashboard.row(result.id)
    expect(row.locator('[data-col="args"]')).to_contain_text(XSS)
    expect(row.locator('[data-col="args"]')).to_contain_text(XSS_FLAG)
    row.locator('[data-action="details"]').click()
    modal = dashboard.page.locator("#fo-details")
    expect(modal.locator('[data-section="args"]')).to_contain_text(XSS)
    expect(modal).to_contain_text(XSS)  # in the result too
    assert dashboard.page.locator("#fo-app img").count() == 0
    assert dashboard.page.evaluate("window.__xss") is None
    assert dashboard.dialogs == []


def test_the_page_survives_a_monitor_restart(dashboard: Dashboard) -> None:
    from testing.apps import automation

    dashboard.open()
    monitor = dashboard.stack.monitor
    monitor.stop()
    dashboard.expect_connection("disconnected", timeout_ms=15_000)
    monitor.start().wait_ready()  # same port
    dashboard.expect_connection("live", timeout_ms=30_000)
    result = automation.add.delay(1, 2)
    dashboard.expect_state(result.id, "SUCCESS")
