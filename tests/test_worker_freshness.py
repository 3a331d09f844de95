"""Fresh numbers: a worker that comes online has its pool (named as Celery's
``-P`` names it), concurrency and queues in ``/workers`` within 2 s, not at the
next periodic inspect; counts shown side by side come from one moment (the
feed's STARTED count is the sum of the workers' active counts, and so are
the page's Running and its worker cards' Active). Real monitor and worker
processes, a real WebSocket client and a real headless Chromium."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from playwright.sync_api import Browser, expect, sync_playwright

from flower_ops.core.times import parse_instant
from flower_ops.monitor.services.workers import pool_name
from testing.processes import DEFAULT_BASIC_AUTH, CeleryWorker
from testing.services import RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

# The periodic inspect far away: whatever arrives within 2 s came from the
# inspect a worker's arrival triggers
MONITOR_ENV = {"FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "60",
               "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5"}
ARRIVAL_SECONDS = 2.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int) -> Iterator[Stack]:
    with running_stack(broker_url=redis_service.url(redis_db), monitor_env=MONITOR_ENV,
                       concurrency=2) as stack:
        yield stack


def test_pools_are_named_as_celery_names_them() -> None:
    assert pool_name("celery.concurrency.prefork:TaskPool") == "prefork"
    assert pool_name("celery.concurrency.thread:TaskPool") == "threads"
    assert pool_name("celery.concurrency.solo:TaskPool") == "solo"
    assert pool_name("celery.concurrency.eventlet:TaskPool") == "eventlet"
    assert pool_name("celery.concurrency.gevent:TaskPool") == "gevent"
    assert pool_name("myapp.pools:CustomPool") == "myapp.pools:CustomPool"
    assert pool_name(None) is None


def workers_by_name(stack: Stack) -> dict[str, dict[str, Any]]:
    return {w["hostname"]: w for w in stack.get_json("/workers")["workers"]}


def time_to_describe(stack: Stack, worker: CeleryWorker, *, online_after: float = 0.0,
                     timeout_seconds: float = 40.0) -> tuple[float, dict[str, Any]]:
    """Seconds from the worker coming online (its first heartbeat after
    ``online_after``, or when /workers first lists it online, whichever is
    earlier) until /workers shows its pool, concurrency and queues; and then
    its entry."""
    came_online: float | None = None
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if not worker.alive():
            raise AssertionError(f"worker exited:\n{worker.output()[-3000:]}")
        entry = workers_by_name(stack).get(worker.hostname)
        now = time.time()
        # last_heartbeat is ISO 8601 UTC (milliseconds) like every time of the API
        heartbeat = parse_instant(entry["last_heartbeat"]) \
            if entry and entry["last_heartbeat"] else 0.0
        if entry and entry["status"] == "online" and heartbeat > online_after:
            if came_online is None:
                came_online = min(now, heartbeat)
            if entry["pool"]["implementation"] and entry["max_concurrency"] and entry["queues"]:
                return now - came_online, entry
        time.sleep(0.05)
    raise AssertionError(f"{worker.hostname} never fully described (came online: {came_online})")


@pytest.mark.parametrize(("pool", "concurrency"), [("solo", 1), ("threads", 3), ("prefork", 2)])
def test_a_new_worker_has_pool_concurrency_and_queues_within_two_seconds(
        stack: Stack, pool: str, concurrency: int) -> None:
    worker = CeleryWorker(stack.broker_url, pool=pool, concurrency=concurrency,
                          queues=("celery", f"fresh-{pool}"))
    worker.start()
    try:
        elapsed, entry = time_to_describe(stack, worker)
        assert elapsed <= ARRIVAL_SECONDS, elapsed
        assert entry["pool"]["implementation"] == pool
        assert entry["pool"]["class"].startswith("celery.concurrency.")
        assert entry["max_concurrency"] == concurrency
        assert entry["queues"] == sorted(["celery", f"fresh-{pool}"])
        # /queues counts it as its queue's consumer from the same replies (at
        # the queue service's next background refresh)
        def consumed() -> bool:
            queues = {q["name"]: q for q in stack.get_json("/queues")["queues"]}
            return (queues.get(f"fresh-{pool}") or {}).get("consumers") == 1

        wait_for(consumed, timeout_seconds=10, message=f"a consumer of fresh-{pool}")
    finally:
        worker.stop()


def test_a_worker_restarted_under_its_hostname_shows_its_new_pool_within_two_seconds(
        stack: Stack) -> None:
    hostname = "fresh-restart@testhost"
    first = CeleryWorker(stack.broker_url, pool="solo", concurrency=1, hostname=hostname,
                         queues=("fresh-restart",))
    first.start()
    try:
        _, entry = time_to_describe(stack, first)
        assert entry["pool"]["implementation"] == "solo"
    finally:
        first.stop()
    stopped_at = time.time()
    second = CeleryWorker(stack.broker_url, pool="threads", concurrency=4, hostname=hostname,
                          queues=("fresh-restart", "fresh-restart-2"))
    second.start()
    try:
        elapsed, entry = time_to_describe(stack, second, online_after=stopped_at)
        assert elapsed <= ARRIVAL_SECONDS, elapsed
        assert entry["pool"]["implementation"] == "threads"
        assert entry["max_concurrency"] == 4
        assert entry["queues"] == ["fresh-restart", "fresh-restart-2"]
    finally:
        second.stop()


def test_the_feeds_started_count_is_the_sum_of_the_workers_active(stack: Stack) -> None:
    from testing.apps import automation

    ws = websocket.create_connection(stack.monitor.ws_url, timeout=10, suppress_origin=True,
                                     header=[f"Authorization: Bearer {stack.token}"])
    try:
        # more than the worker's 2 slots: some run, the rest wait as RECEIVED
        results = [automation.sleep.delay(1.5) for _ in range(6)]
        seen: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = json.loads(ws.recv())
            if message["type"] != "snapshot":
                continue
            by_state = message["stats"]["tasks"]["by_state"]
            active = sum(w["active"] or 0 for w in message["workers"])
            seen.append((by_state["STARTED"], active, by_state["RECEIVED"]))
            if all(r.ready() for r in results) and by_state["STARTED"] == 0:
                break
        assert seen, "no snapshot"
        assert all(started == active for started, active, _ in seen), seen
        assert any(started == 2 for started, _, _ in seen), seen   # both slots busy
        assert any(received > 0 for _, _, received in seen), seen  # and some waiting
        for result in results:
            result.get(timeout=30)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


# One evaluate: both numbers from the same render
READ_COUNTS = """() => {
  const number = text => Number(text.replace(/[^0-9]/g, "")) || 0;
  const field = name => Array.from(document.querySelectorAll(
    `#fo-workers [data-worker] dd[data-field="${name}"]`));
  const running = number(document.getElementById("fo-stat-running").textContent);
  const cards = field("active");
  const active = cards.reduce((sum, dd) => sum + number(dd.textContent), 0);
  return {running, active, cards: cards.length,
          pools: field("concurrency").map(dd => dd.textContent)};
}"""


@pytest.mark.browser
def test_the_pages_running_is_the_sum_of_its_worker_cards_active(browser: Browser,
                                                                  stack: Stack) -> None:
    from testing.apps import automation

    user, _, password = DEFAULT_BASIC_AUTH.partition(":")
    context = browser.new_context(http_credentials={"username": user, "password": password},
                                  viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{stack.monitor.base_url}/monitoring")
        expect(page.locator("#fo-conn")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(page.locator(f'#fo-workers [data-worker="{stack.worker.hostname}"]')
               ).to_be_visible()
        results = [automation.sleep.delay(1.5) for _ in range(6)]
        samples = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts = page.evaluate(READ_COUNTS)
            samples.append(counts)
            if all(r.ready() for r in results) and counts["running"] == 0:
                break
            page.wait_for_timeout(100)
        assert all(s["running"] == s["active"] for s in samples), samples
        assert any(s["running"] == 2 for s in samples), samples
        assert any("2 · prefork" in pool for s in samples for pool in s["pools"]), samples[-1]
    finally:
        context.close()
