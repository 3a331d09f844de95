"""The console's workflow views in a real headless Chromium (Playwright), against
a real monitor, a real Celery worker, the sync worker and PostgreSQL: a chain
that fails at its third step shows as failed in the list and as a tree with its
two unsent steps; a step's detail on click; a step's task page links to its
workflow; Resume (a dry run, then confirm) brings it to succeeded; a big chord
folds its members; task data stays text; axe-core finds nothing serious."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord
from playwright.sync_api import Browser, Page, expect, sync_playwright

from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack
from tests.test_console import AXE, CHROMIUM_ARGS, CREDENTIALS, XSS, Console

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHORD_SIZE = 30


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(name), monitor_env=FAST_MONITOR_REFRESH,
                           sync_env=FAST_SYNC_WORKER, concurrency=4) as stack:
            yield stack
    finally:
        pg_service.drop_database(name)


@pytest.fixture(scope="module")
def workflows(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A chain of five steps that fails at step 3 (while its flag file, named
    like markup, exists) and a chord of CHORD_SIZE members."""
    from testing.apps import automation

    flag = tmp_path_factory.mktemp("flags") / XSS
    flag.write_text("fail")
    last = chain(automation.step.s(0, 1), automation.step.s(2),
                 automation.step.s(3, fail_flag=str(flag)), automation.step.s(4),
                 automation.step.s(5)).apply_async()
    steps = [last.id]
    node = last.parent
    while node is not None:
        steps.insert(0, node.id)
        node = node.parent
    big = chord([automation.step.s(i, 1) for i in range(CHORD_SIZE)],
                automation.collect.s()).apply_async()
    stack.wait_state(steps[2], "FAILURE")
    stack.wait_state(big.id, "SUCCESS")
    return {"steps": steps, "root": steps[0], "flag": flag, "chord_body": big.id}


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


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


def node(page: Page, task_id: str) -> Any:
    return page.locator(f'#fo-wf-tree .fo-wf-node[data-node-id="{task_id}"]')


def test_a_chain_failed_at_step_3_is_listed_failed_and_drawn_with_two_steps_not_sent(
        console: Console, workflows: dict[str, Any]) -> None:
    page = console.page
    steps = workflows["steps"]
    console.open("/monitoring/workflows?state=failed")
    expect(page.locator("#fo-wf-state")).to_have_value("failed")
    row = page.locator(f'#fo-wf-table tr[data-workflow-id="{workflows["root"]}"]')
    expect(row).to_have_attribute("data-state", "failed")
    expect(row.locator('[data-col="steps"]')).to_contain_text("5 steps")
    # only failed ones under this filter
    states = page.eval_on_selector_all("#fo-wf-table tbody tr[data-state]",
                                       "rows => rows.map(r => r.dataset.state)")
    assert set(states) == {"failed"}

    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"/monitoring/workflows/{workflows['root']}$"))
    expect(page.locator("#fo-wf-head")).to_have_attribute("data-state", "failed")
    expect(page.locator("#fo-wf-tree .fo-wf-node")).to_have_count(5)
    failed = page.locator("#fo-wf-tree .fo-wf-failed-at")
    expect(failed).to_have_count(1)
    expect(failed).to_have_attribute("data-node-id", steps[2])
    expect(failed).to_contain_text("failed here")
    unsent = page.locator('#fo-wf-tree .fo-wf-node[data-published="false"]')
    expect(unsent).to_have_count(2)
    for index in (0, 1):
        expect(unsent.nth(index)).to_contain_text("not sent")
    assert sorted(unsent.evaluate_all("els => els.map(e => e.dataset.nodeId)")) == sorted(steps[3:])
    for task_id in steps[:2]:
        expect(node(page, task_id)).to_have_attribute("data-state", "SUCCESS")
    # the steps left to right, in chain order
    xs = [node(page, task_id).bounding_box()["x"] for task_id in steps[:4]]
    assert xs == sorted(xs)
    # the head: the failed step as a link, the counts
    expect(page.locator("#fo-wf-head")).to_contain_text("5 steps: 2 SUCCESS · 3 FAILURE (2 not sent)")
    expect(page.locator("#fo-wf-resume")).to_be_enabled()
    expect(page.locator("#fo-wf-cancel")).to_be_disabled()


def test_a_step_shows_its_detail_on_click_and_its_task_page_links_back(
        console: Console, workflows: dict[str, Any]) -> None:
    page = console.page
    steps = workflows["steps"]
    console.open(f"/monitoring/workflows/{steps[3]}")   # any member's id opens the workflow
    expect(page.locator("#fo-wf-tree .fo-wf-node")).to_have_count(5)
    node(page, steps[2]).click()
    panel = page.locator("#fo-wf-panel")
    expect(panel).to_have_attribute("data-node-id", steps[2])
    expect(panel.locator('[data-field="task_id"]')).to_have_text(steps[2])
    expect(panel.locator('[data-field="worker"]')).not_to_have_text("—")
    expect(panel.locator(".fo-wf-exception")).to_contain_text(XSS)   # as text
    expect(node(page, steps[2])).to_have_attribute("aria-pressed", "true")
    node(page, steps[4]).click()
    expect(panel).to_contain_text("never sent")
    expect(panel.locator('[data-testid="fo-wf-task-link"]')).to_have_count(0)
    # from a step to its task page, and back through its "Workflow" link
    node(page, steps[1]).click()
    panel.locator('[data-testid="fo-wf-task-link"]').click()
    expect(page).to_have_url(re.compile(f"/monitoring/tasks/{steps[1]}$"))
    link = page.locator('[data-testid="fo-workflow-link"]')
    expect(link).to_have_text("Workflow")
    expect(link).to_have_attribute("href", f"/monitoring/workflows/{workflows['root']}")
    link.click()
    expect(page.locator("#fo-wf-tree .fo-wf-node")).to_have_count(5)
    console.no_script_ran()


def test_resume_asks_with_a_dry_run_then_the_workflow_succeeds(
        console: Console, workflows: dict[str, Any]) -> None:
    page = console.page
    steps = workflows["steps"]
    workflows["flag"].unlink()
    console.open(f"/monitoring/workflows/{workflows['root']}")
    expect(page.locator("#fo-wf-head")).to_have_attribute("data-state", "failed")
    page.locator("#fo-wf-resume").click()
    console.confirm("Resume this workflow?", "Send again automation.step " + steps[2][:8],
                    "2 steps after it")
    feedback = page.locator("#fo-wf-feedback .fo-feedback")
    expect(feedback).to_contain_text("Resumed: sent 1 failed step again")
    expect(page.locator("#fo-wf-head")).to_have_attribute("data-state", "succeeded",
                                                           timeout=40_000)
    # the resumed run sits next to the step it replaced; the old step stays, marked
    resumed = page.locator("#fo-wf-tree .fo-wf-node", has_text="resumes " + steps[2][:8])
    expect(resumed).to_have_attribute("data-state", "SUCCESS")
    expect(node(page, steps[2])).to_contain_text("replaced by")
    old_box, new_box = node(page, steps[2]).bounding_box(), resumed.bounding_box()
    assert old_box and new_box and abs(old_box["x"] - new_box["x"]) < 2
    assert new_box["y"] > old_box["y"]
    expect(page.locator("#fo-wf-resume")).to_be_disabled()
    expect(page.locator("#fo-wf-cancel")).to_be_disabled()
    # and in the list, under succeeded
    console.open("/monitoring/workflows?state=succeeded")
    expect(page.locator(f'#fo-wf-table tr[data-workflow-id="{workflows["root"]}"]')
           ).to_have_attribute("data-state", "succeeded")


def test_a_big_chord_folds_its_members_and_shows_them_all_on_demand(
        console: Console, workflows: dict[str, Any]) -> None:
    page = console.page
    console.open(f"/monitoring/workflows/{workflows['chord_body']}")
    group = page.locator("#fo-wf-tree .fo-wf-group")
    expect(group).to_contain_text(f"Chord header · {CHORD_SIZE} members")
    expect(group.locator(".fo-wf-node")).to_have_count(8)
    body = node(page, workflows["chord_body"])
    expect(body).to_contain_text("chord body")
    more = group.locator(".fo-wf-more")
    expect(more).to_have_text(f"… {CHORD_SIZE - 8} more: show all {CHORD_SIZE}")
    more.click()
    chips = page.locator("#fo-wf-tree .fo-wf-chip")
    expect(chips).to_have_count(CHORD_SIZE)
    chips.nth(CHORD_SIZE - 1).click()
    expect(page.locator('#fo-wf-panel [data-field="group"]')).to_contain_text(
        f"#{CHORD_SIZE - 1} of group")


def test_axe_core_finds_no_serious_violation_in_the_workflow_views(
        browser: Browser, stack: Stack, workflows: dict[str, Any]) -> None:
    found: dict[str, list[str]] = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(http_credentials=CREDENTIALS, bypass_csp=True,
                                      color_scheme=scheme)
        try:
            page = context.new_page()
            for path in ("/monitoring/workflows",
                         f"/monitoring/workflows/{workflows['root']}"):
                page.goto(stack.monitor.base_url + path)
                expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live")
                if path != "/monitoring/workflows":
                    page.locator("#fo-wf-tree .fo-wf-node").first.click()
                page.wait_for_timeout(500)
                page.add_script_tag(path=str(AXE))
                violations = page.evaluate(
                    "async () => (await axe.run(document, {resultTypes: ['violations']}))"
                    ".violations.filter(v => v.impact === 'serious' || v.impact === 'critical')"
                    ".map(v => v.id + ': ' + v.nodes.slice(0, 3)"
                    ".map(n => n.target.join(' ')).join(' | '))")
                if violations:
                    found[f"{scheme} {path}"] = violations
        finally:
            context.close()
    assert found == {}


def test_the_workflow_paths_are_served_behind_flower_auth(browser: Browser, stack: Stack,
                                                          workflows: dict[str, Any]) -> None:
    anonymous = browser.new_context()
    allowed = browser.new_context(http_credentials=CREDENTIALS)
    try:
        for path in ("/monitoring/workflows", f"/monitoring/workflows/{workflows['root']}"):
            assert anonymous.request.get(stack.monitor.base_url + path).status == 401, path
            response = allowed.request.get(stack.monitor.base_url + path)
            assert response.status == 200, path
            assert 'id="fo-view-workflow"' in response.text()
    finally:
        anonymous.close()
        allowed.close()
