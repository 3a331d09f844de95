"""The operator console under /monitoring in a real headless Chromium (Playwright),
against a real monitor that keeps few tasks in memory, a real Celery worker, the
sync worker and PostgreSQL: routes, the task browser (URL filters, paging into
PostgreSQL history, counts), the task page, actions with confirmation and
feedback in view, bulk with a dry run, alerts, charts after a reload, the
task-name table, workers and queues, the time switch, XSS through every view,
axe-core, the phone width and the keyboard."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    HttpCredentials,
    Page,
    expect,
    sync_playwright,
)

from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
XSS = "<img src=x onerror=window.__xss=1>"
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
VIEWS = ("/monitoring", "/monitoring/tasks", "/monitoring/names", "/monitoring/workers",
         "/monitoring/queues")
MEMORY_TASKS = 20
CREDENTIALS: HttpCredentials = {"username": "admin", "password": "admin123"}


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(name),
                           monitor_env={**FAST_MONITOR_REFRESH,
                                        "FLOWER_OPS_STUCK_TASK_SECONDS": "3"},
                           monitor_args=[f"--max_tasks={MEMORY_TASKS}"],
                           sync_env=FAST_SYNC_WORKER, concurrency=4) as stack:
            yield stack
    finally:
        pg_service.drop_database(name)


@pytest.fixture(scope="module")
def history(stack: Stack) -> dict[str, Any]:
    """More finished tasks than memory holds, all in PostgreSQL; a failure; an XSS echo."""
    from testing.apps import automation

    adds = [automation.add.delay(i, 1000).id for i in range(30)]
    failed = automation.fail.delay("console says hi").id
    echo = automation.echo.delay(XSS, note=XSS).id
    for task_id in adds:
        stack.wait_status(task_id, "success")
    stack.wait_status(failed, "failure")
    stack.wait_status(echo, "success")
    return {"adds": adds, "failed": failed, "echo": echo}


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


class Console:
    def __init__(self, context: BrowserContext, stack: Stack) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.page.set_default_timeout(20_000)
        self.stack = stack
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.problems.append(message.text)

    def open(self, path: str) -> Console:
        self.page.goto(self.stack.monitor.base_url + path)
        expect(self.page.locator("#fo-conn")).to_have_attribute("data-state", "live")
        return self

    def row(self, task_id: str, table: str = "#fo-browse") -> Any:
        return self.page.locator(f'{table} tr[data-task-id="{task_id}"]')

    def confirm(self, *words: str) -> None:
        dialog = self.page.locator("#fo-confirm")
        expect(dialog).to_be_visible()
        for word in words:
            expect(dialog).to_contain_text(word)
        dialog.locator("[data-confirm]").click()
        expect(dialog).to_be_hidden()

    def no_script_ran(self) -> None:
        assert self.page.locator("#fo-app img").count() == 0
        assert self.page.evaluate("window.__xss") is None


@pytest.fixture
def console(browser: Browser, stack: Stack) -> Iterator[Console]:
    context = browser.new_context(http_credentials=CREDENTIALS,
                                  viewport={"width": 1440, "height": 900})
    board = Console(context, stack)
    try:
        yield board
        assert board.problems == []
    finally:
        context.close()


def browse_ids(console: Console) -> list[str]:
    expect(console.page.locator("#fo-browse-status")).not_to_have_text("Loading…")
    return console.page.eval_on_selector_all(
        "#fo-browse tbody tr[data-task-id]", "rows => rows.map(r => r.dataset.taskId)")


def test_every_view_is_served_behind_flower_auth(browser: Browser, stack: Stack) -> None:
    anonymous = browser.new_context()
    allowed = browser.new_context(http_credentials=CREDENTIALS)
    try:
        for path in (*VIEWS, "/monitoring/tasks/some-task-id"):
            assert anonymous.request.get(stack.monitor.base_url + path).status == 401, path
            response = allowed.request.get(stack.monitor.base_url + path)
            assert response.status == 200, path
            assert 'id="fo-app"' in response.text()
            assert "script-src 'self'" in response.headers["content-security-policy"]
    finally:
        anonymous.close()
        allowed.close()


def test_a_bookmarked_filter_pages_past_memory_into_postgresql_history(
        console: Console, history: dict[str, Any]) -> None:
    page = console.page
    console.open("/monitoring/tasks?name=automation.add&state=SUCCESS&limit=10")
    expect(page.locator("#fo-f-name")).to_have_value("automation.add")
    expect(page.locator("#fo-f-state")).to_have_value("SUCCESS")
    expect(page.locator('[data-count-state="SUCCESS"]')).to_contain_text("30")
    seen: list[str] = []
    pages: list[list[str]] = []
    while True:
        ids = browse_ids(console)
        assert ids and not set(ids) & set(seen), ids
        states = page.eval_on_selector_all("#fo-browse tbody tr",
                                           "rs => rs.map(r => r.dataset.state)")
        assert set(states) == {"SUCCESS"}
        seen.extend(ids)
        pages.append(ids)
        nxt = page.locator("#fo-page-next")
        if nxt.is_disabled():
            break
        nxt.click()
        expect(page).to_have_url(re.compile(r"cursor="))
        expect(page.locator("#fo-browse tbody tr").first).not_to_have_attribute(
            "data-task-id", ids[0])
    # more than memory holds: the rest came from PostgreSQL, as one list, newest first
    assert len(seen) > MEMORY_TASKS
    assert sorted(seen) == sorted(history["adds"])
    assert seen == list(reversed(history["adds"]))
    # back one page
    page.locator("#fo-page-prev").click()
    expect(page.locator("#fo-browse tbody tr").first).to_have_attribute("data-task-id",
                                                                        pages[-2][0])
    # oldest first, and a reload of the URL gives the same view
    page.locator("#fo-f-order").select_option("asc")
    expect(page).to_have_url(re.compile(r"order=asc"))
    expect(page.locator("#fo-browse tbody tr").first).to_have_attribute("data-task-id",
                                                                        history["adds"][0])
    page.reload()
    expect(page.locator("#fo-browse tbody tr").first).to_have_attribute("data-task-id",
                                                                        history["adds"][0])
    # compact rows: a short id, a clock time with the ISO instant on hover, args apart
    first = console.row(history["adds"][0])
    expect(first.locator('[data-col="id"] a')).to_have_text(history["adds"][0][:8])
    expect(first.locator('[data-col="args"]')).to_have_text("[0,1000]")
    clock = first.locator('[data-col="time"] time')
    expect(clock).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    expect(clock).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\dT.*Z"))


def test_cancel_asks_then_tells_next_to_a_row_far_down(console: Console,
                                                        history: dict[str, Any]) -> None:
    from testing.apps import automation

    page = console.page
    running = automation.sleep.delay(60)
    console.stack.wait_state(running.id, "STARTED")
    for i in range(25):
        automation.add.delay(i, 1)
    time.sleep(2)
    console.open("/monitoring/tasks?limit=40")
    row = console.row(running.id)
    expect(row).to_have_attribute("data-state", "STARTED")
    elapsed = row.locator("[data-elapsed-since]")
    before = elapsed.inner_text()
    page.wait_for_timeout(1_500)
    assert elapsed.inner_text() != before   # it ticks
    expect(row.locator('[data-action="retry"]')).to_be_disabled()
    expect(row.locator('[data-action="retry"]')).to_have_attribute("title",
                                                                   re.compile("Cannot retry"))
    row.locator('[data-action="cancel"]').scroll_into_view_if_needed()
    row.locator('[data-action="cancel"]').click()
    console.confirm(running.id, "terminated")
    expect(row).to_have_attribute("data-state", "REVOKED")
    feedback = row.locator(".fo-feedback")
    expect(feedback).to_contain_text(f"Cancelled {running.id}")
    expect(feedback).to_be_in_viewport()
    # retry, then retry again explicitly
    row.locator('[data-action="retry"]').click()
    done = row.locator(".fo-feedback[data-new-id]")
    expect(done).to_contain_text(f"Retried {running.id} as")
    new_id = done.get_attribute("data-new-id")
    expect(done).to_contain_text(f"as {new_id}")
    expect(row.locator('[data-action="retry"]')).to_have_text("Retry again")
    row.locator('[data-action="retry"]').click()
    console.confirm("again")
    again = row.locator(f'.fo-feedback[data-new-id]:not([data-new-id="{new_id}"])')
    expect(again).to_contain_text(f"Retried {running.id} as")
    newer = again.get_attribute("data-new-id")
    assert newer and newer != new_id
    for task_id in (new_id, newer):
        console.stack.post(f"/tasks/{task_id}/cancel")


def test_the_task_page_has_every_field_links_and_a_timeline(console: Console,
                                                           history: dict[str, Any]) -> None:
    page = console.page
    failed = history["failed"]
    console.open(f"/monitoring/tasks/{failed}")
    body = page.locator("#fo-details")
    expect(body.locator('[data-field="id"]')).to_have_text(failed)
    expect(body.locator('[data-field="name"]')).to_have_text("automation.fail")
    expect(body).to_contain_text("Task name")
    expect(body).to_contain_text("Received by worker")
    expect(body.locator('[data-section="args"]')).to_contain_text("console says hi")
    expect(body.locator('[data-section="traceback"]')).to_contain_text("ValueError")
    steps = body.locator('[data-testid="fo-history"] tr')
    expect(steps).to_have_count(4)
    expect(steps.nth(1)).to_contain_text("+")
    flower = body.locator('[data-testid="fo-flower-link"]')
    expect(flower).to_have_attribute("href", f"/task/{failed}")
    expect(body.locator('[data-action="cancel"]')).to_be_disabled()
    body.locator('[data-action="retry"]').click()
    expect(page.locator("#fo-task-feedback")).to_contain_text(f"Retried {failed} as")
    page.reload()
    link = page.locator('#fo-details [data-link="retried_as"] a')
    expect(link).to_be_visible()
    expect(page.locator("#fo-details [data-action=retry]")).to_have_text("Retry again")
    link.click()
    expect(page.locator('#fo-details [data-link="retry_of"] a')).to_have_text(failed)
    expect(page).to_have_url(re.compile(r"/monitoring/tasks/[0-9a-f-]+$"))


@pytest.mark.parametrize("button, answer", [("#fo-confirm-ok", True),
                                            ('#fo-confirm [data-bs-dismiss="modal"].btn', False)])
def test_a_confirmation_answered_while_it_fades_in_still_closes(
        console: Console, button: str, answer: bool) -> None:
    """Bootstrap ignores hide() during the fade-in; a click that quick (a
    loaded machine, a fast hand) must still close the dialog with its answer."""
    console.open("/monitoring")
    result = console.page.evaluate("""(button) => {
        const asked = FO.confirm({title: "Retry t1 again?", lines: ["once more"],
                                  confirmLabel: "Retry again"});
        document.querySelector(button).click();
        return Promise.race([asked, new Promise((r) => setTimeout(() => r("stuck"), 5000))]);
    }""", button)
    assert result is answer
    expect(console.page.locator("#fo-confirm")).to_be_hidden()


def test_bulk_cancel_runs_a_dry_run_first(console: Console, stack: Stack) -> None:
    from testing.apps import automation

    page = console.page
    ids = [automation.sleep.delay(60, None).id for _ in range(2)]
    for task_id in ids:
        stack.wait_state(task_id, "STARTED")
    # one row per page: "all N matching this filter" reaches past the page
    console.open("/monitoring/tasks?name=automation.sleep&state=STARTED&limit=1")
    expect(page.locator("#fo-browse tbody tr[data-task-id]")).to_have_count(1)
    page.locator('#fo-browse input[data-select="page"]').check()
    expect(page.locator("#fo-bulk-count")).to_contain_text("1 selected")
    page.locator("#fo-bulk-all").click()
    expect(page.locator("#fo-bulk-count")).to_contain_text("All 2 tasks matching")
    page.locator("#fo-bulk-cancel").click()
    dialog = page.locator("#fo-confirm")
    expect(dialog.locator('[data-outcome="would_cancel"]')).to_have_text("2 will be cancelled")
    console.confirm("Cancel 2")
    result = page.locator("#fo-bulk-result")
    expect(result.locator('[data-outcome="cancelled"]')).to_have_text("2 cancelled",
                                                                    timeout=30_000)
    for task_id in ids:
        assert stack.task(task_id)["state"] == "REVOKED"
    # a selection of rows: a retry's dry run says what it skips and why
    console.open("/monitoring/tasks?name=automation.sleep")
    for task_id in ids:
        console.row(task_id).locator('input[data-select="row"]').check()
    page.locator("#fo-bulk-retry").click()
    expect(dialog.locator('[data-outcome="would_retry"]')).to_have_text("2 will be retried")
    console.confirm("Retry 2")
    expect(result.locator('[data-outcome="retried"]')).to_have_text("2 retried", timeout=30_000)
    # the retried copies would hold worker slots the next tests need
    stack.post("/tasks/bulk/cancel", {"filters": {"name": "automation.sleep"}, "dry_run": False})


def test_alerts_in_words_with_links_and_a_count_on_every_view(console: Console,
                                                              stack: Stack) -> None:
    from testing.apps import automation

    page = console.page
    stuck = automation.sleep.delay(60)
    stack.wait_state(stuck.id, "STARTED")
    console.open("/monitoring")
    alert = page.locator('#fo-alerts [data-alert="stuck_task"]').filter(has_text=stuck.id)
    expect(alert).to_contain_text("Stuck task", timeout=20_000)
    expect(alert).to_contain_text("since")
    for path in VIEWS:
        page.goto(stack.monitor.base_url + path)
        expect(page.locator("#fo-alert-count")).not_to_have_text("0")
    page.goto(stack.monitor.base_url + "/monitoring")
    alert.get_by_role("link", name="Open task").click()
    expect(page).to_have_url(re.compile(f"/monitoring/tasks/{stuck.id}$"))
    expect(page.locator('#fo-details [data-field="id"]')).to_have_text(stuck.id)
    page.go_back()
    alert.locator('[data-action="cancel"]').click()
    console.confirm(stuck.id)
    expect(page.locator("#fo-notices")).to_contain_text(f"Cancelled {stuck.id}")
    expect(alert).to_have_count(0, timeout=20_000)   # the alert resolves


def test_charts_and_the_task_name_table_come_from_the_monitor(
        console: Console, history: dict[str, Any]) -> None:
    page = console.page
    console.open("/monitoring")
    chart = page.locator('[data-chart="Completed and failed per minute"]')
    expect(chart).to_have_attribute("data-points", re.compile(r"[1-9]"))
    page.reload()
    expect(chart).to_have_attribute("data-points", re.compile(r"[1-9]"))
    expect(chart.locator("canvas")).to_be_visible()
    page.locator("#fo-console-nav a", has_text="Task names").click()
    table = page.locator("#fo-names-table")
    add = table.locator('tr[data-name="automation.add"]')
    expect(add).to_be_visible()
    fail = table.locator('tr[data-name="automation.fail"]')
    expect(fail.locator("a.fo-id")).to_have_attribute("href", re.compile(r"/monitoring/tasks/"))
    table.locator('[data-sort="failure_rate"]').click()
    expect(table.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")
    expect(table.locator("tbody tr").first).to_have_attribute("data-name", "automation.fail")
    fail.locator("a.fo-id").click()    # the last failure, linked
    expect(page.locator('#fo-details [data-field="state"]')).to_have_text("FAILURE")


def test_workers_and_queues_views(console: Console, stack: Stack) -> None:
    from testing.apps import automation

    page = console.page
    running = automation.sleep.delay(30)
    stack.wait_state(running.id, "STARTED")
    console.open("/monitoring/workers")
    page.locator("#fo-workers-list [data-worker] a").first.click()
    detail = page.locator("#fo-worker-detail")
    expect(detail.locator('[data-field="pool"]')).to_contain_text("slots")
    expect(detail.locator('[data-field="memory"]')).to_contain_text("B")
    expect(detail.locator('[data-field="heartbeat"]')).to_contain_text("ago")
    row = detail.locator(f'tr[data-task-id="{running.id}"]')
    expect(row.locator("[data-elapsed-since]")).to_be_visible()
    console.open("/monitoring/queues?name=celery")
    qdetail = page.locator("#fo-queue-detail")
    expect(qdetail.locator('[data-field="consumers"]')).to_have_text(re.compile(r"[1-9]"))
    expect(qdetail.locator("[data-chart]")).to_be_visible()
    expect(qdetail.locator(f'tr[data-task-id="{running.id}"]')).to_be_visible()
    stack.post(f"/tasks/{running.id}/cancel")


def test_times_are_utc_until_switched_to_local_and_the_switch_persists(
        browser: Browser, stack: Stack, history: dict[str, Any]) -> None:
    context = browser.new_context(http_credentials=CREDENTIALS, timezone_id="Asia/Kolkata")
    try:
        console = Console(context, stack).open(f"/monitoring/tasks/{history['failed']}")
        page = console.page
        sent = page.locator('#fo-details [data-field="sent"] time')
        iso = sent.get_attribute("datetime") or ""
        expect(sent).to_contain_text(iso[11:19])       # UTC by default
        expect(sent).to_contain_text("UTC")
        page.locator("#fo-tz").click()
        expect(page.locator("#fo-tz")).to_contain_text("local")
        expect(sent).to_contain_text("UTC+05:30")
        page.reload()
        expect(page.locator("#fo-tz")).to_contain_text("local")
        expect(page.locator('#fo-details [data-field="sent"] time')).to_contain_text("UTC+05:30")
        assert console.problems == []
    finally:
        context.close()


def test_task_data_is_text_in_every_view(console: Console, history: dict[str, Any]) -> None:
    echo = history["echo"]
    console.open(f"/monitoring/tasks/{echo}")
    expect(console.page.locator('#fo-details [data-section="args"]')).to_contain_text(XSS)
    expect(console.page.locator('#fo-details [data-section="result"]')).to_contain_text(XSS)
    console.no_script_ran()
    console.open("/monitoring/tasks?name=automation.echo")
    expect(console.row(echo).locator('[data-col="args"]')).to_contain_text(XSS)
    expect(console.row(echo).locator('[data-col="kwargs"]')).to_contain_text(XSS)
    console.no_script_ran()
    for path in VIEWS:
        console.open(path)
        console.page.wait_for_timeout(500)
        console.no_script_ran()


def test_axe_core_finds_no_serious_or_critical_violation(browser: Browser, stack: Stack,
                                                         history: dict[str, Any]) -> None:
    found: dict[str, list[str]] = {}
    for scheme in ("light", "dark"):     # Flower's theme follows the system's
        found.update(axe_violations(browser, stack, scheme, history))
    assert found == {}


def axe_violations(browser: Browser, stack: Stack, scheme: Any,
                   history: dict[str, Any]) -> dict[str, list[str]]:
    # axe is injected as a script: this context alone lets it past the page's CSP
    context = browser.new_context(http_credentials=CREDENTIALS, bypass_csp=True,
                                  color_scheme=scheme)
    try:
        page = context.new_page()
        found: dict[str, list[str]] = {}
        for path in (*VIEWS, f"/monitoring/tasks/{history['failed']}"):
            page.goto(stack.monitor.base_url + path)
            expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live")
            page.wait_for_timeout(1_000)
            page.add_script_tag(path=str(AXE))
            violations = page.evaluate(
                "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                ".map(v => v.id + ': ' + v.nodes.slice(0, 3)"
                ".map(n => n.target.join(' ')).join(' | '))")
            if violations:
                found[f"{scheme} {path}"] = violations
        return found
    finally:
        context.close()


def test_at_phone_width_every_action_is_reachable(browser: Browser, stack: Stack,
                                                  history: dict[str, Any]) -> None:
    context = browser.new_context(http_credentials=CREDENTIALS,
                                  viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    try:
        console = Console(context, stack)
        page = console.page
        for path in (*VIEWS, f"/monitoring/tasks/{history['failed']}",
                     "/monitoring/tasks?limit=10"):
            console.open(path)
            page.wait_for_timeout(800)
            width = page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 390, (path, width)
            buttons = page.locator("#fo-app .fo-view:not([hidden]) button:visible, "
                                   "#fo-app .fo-view:not([hidden]) [data-action]:visible")
            for i in range(min(buttons.count(), 40)):
                button = buttons.nth(i)
                button.scroll_into_view_if_needed()
                box = button.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (
                    path, button.inner_text(), box)
        # the phone can act: retry the failed task from its page
        console.open(f"/monitoring/tasks/{history['failed']}")
        page.locator('#fo-details [data-action="retry"]').tap()
        expect(page.locator("#fo-task-feedback .fo-feedback, #fo-confirm")).not_to_have_count(0)
        assert console.problems == []
    finally:
        context.close()


def test_the_console_works_from_the_keyboard(console: Console, history: dict[str, Any]) -> None:
    page = console.page
    console.open("/monitoring")
    page.keyboard.press("/")
    expect(page).to_have_url(re.compile(r"/monitoring/tasks$"))
    expect(page.locator("#fo-f-search")).to_be_focused()
    page.keyboard.type("console says hi")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"search=console"))
    console.open("/monitoring/tasks?name=automation.fail")
    row = console.row(history["failed"])
    expect(row).to_be_visible()
    row.locator('[data-col="id"] a').focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/monitoring/tasks/{history['failed']}$"))
    expect(page.locator("#fo-task-title")).to_be_focused()
    # Tab reaches the actions; Escape closes the confirmation
    wait_for(lambda: page.locator('#fo-details [data-action="retry"]').count() > 0,
             message="task page actions")
    page.locator("#fo-tz").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fo-tz")).to_contain_text("local")
    page.keyboard.press("Enter")
    expect(page.locator("#fo-tz")).to_contain_text("UTC")


def test_actions_work_from_the_keyboard_alone(console: Console, stack: Stack) -> None:
    """Tab to an action, Enter to act, the outcome is announced next to it; a
    second retry asks first, and Escape backs out of the confirmation."""
    from testing.apps import automation

    failed = automation.fail.delay("keyboard only").id
    stack.wait_state(failed, "FAILURE")
    page = console.page
    console.open(f"/monitoring/tasks/{failed}")
    retry = page.locator('#fo-details [data-action="retry"]').first
    expect(retry).to_be_enabled()
    page.locator("#fo-task-title").focus()
    for _ in range(12):                      # Tab from the title until Retry has focus
        if retry.evaluate("node => node === document.activeElement"):
            break
        page.keyboard.press("Tab")
    assert retry.evaluate("node => node === document.activeElement"), "Tab never reached Retry"
    page.keyboard.press("Enter")
    # next to the action (and in the corner notice)
    expect(page.locator("#fo-details .fo-feedback").filter(
        has_text=re.compile(f"Retried {failed} as "))).to_be_visible()
    new_ids = [t["id"] for t in stack.get_json("/tasks", limit=50)["tasks"]
               if t["id"] != failed and t["name"] == "automation.fail"]
    assert new_ids, "the retry reached the broker"

    expect(retry).to_have_text("Retry again")
    expect(retry).to_be_enabled()            # busy only while the request runs
    retry.focus()                            # again: the task was retried already
    page.keyboard.press("Enter")
    dialog = page.locator("#fo-confirm")
    again = page.locator('#fo-details [data-action="retry-again"]')
    # the page asks at once when it knows of the earlier retry, else the API's
    # 409 offers "Retry again" next to the button, which then asks
    wait_for(lambda: dialog.is_visible() or again.count() > 0, message="retry again offered")
    if not dialog.is_visible():
        again.first.focus()
        page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("again")
    wait_for(lambda: page.evaluate(
        "document.getElementById('fo-confirm').contains(document.activeElement)"),
        message="focus inside the confirmation")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    time.sleep(1)                            # backing out sent nothing
    assert len([t for t in stack.get_json("/tasks", limit=50)["tasks"]
                if t["id"] != failed and t["name"] == "automation.fail"]) == len(new_ids)
    assert console.problems == []


def test_the_page_subscribes_to_its_window_and_the_rows_its_view_shows(
        console: Console, stack: Stack) -> None:
    """The page takes the feed in window mode (docs/live-feed.md): its first
    message asks for the overview's window, a task page names its task, and
    what arrives is snapshots, view and numbers messages, never every change."""
    import json

    from testing.apps import automation

    sent: list[dict[str, Any]] = []
    received: list[str] = []

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: received.append(json.loads(payload)["type"]))

    page = console.page
    page.on("websocket", on_socket)
    console.open("/monitoring")
    auth = sent[0]
    assert auth["type"] == "auth" and auth["mode"] == "window" and auth["limit"] == 30
    slow = automation.sleep.delay(2)
    # a new task enters the overview's grid, and its end comes as a change
    expect(console.row(slow.id, "#fo-tasks")).to_have_attribute("data-state", "SUCCESS",
                                                                timeout=30_000)
    # the task page names its task; its page follows it on the feed
    page.goto(stack.monitor.base_url + f"/monitoring/tasks/{slow.id}")
    expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live")

    def seen(predicate: Any) -> Any:
        page.wait_for_timeout(100)  # Playwright hands over frame events while it runs
        return predicate()

    wait_for(lambda: seen(lambda: any(
        m.get("type") in ("auth", "subscribe") and m.get("ids") == [slow.id] for m in sent)),
        message=f"the task page subscribed to its task ({[m.get('ids') for m in sent]})")
    wait_for(lambda: seen(lambda: "numbers" in received), message="fresh numbers")
    assert "view" in received and "tasks" not in received
    expect(page.locator("#fo-task-state")).to_have_attribute("data-state", "SUCCESS")
