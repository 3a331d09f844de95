"""Trace links: a publisher instrumented with OpenTelemetry
(``opentelemetry-instrumentation-celery``) propagates W3C trace context in
the task message; ``instrument(app)`` carries its trace id in the
``task-sent`` event, so a task's detail — from memory and from PostgreSQL —
says ``trace_id``, and with ``FLOWER_OPS_TRACE_URL`` its ``trace_url`` and a
link on the page. Real OpenTelemetry SDK, worker, monitor, sync worker,
Redis, PostgreSQL and Chromium."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from playwright.sync_api import expect, sync_playwright

from flower_ops.core.env import ConfigError
from flower_ops.core.trace import clean_trace_id, trace_id_of
from flower_ops.monitor.config import MonitorConfig
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(180)

TRACE_URL = "https://tracing.example/trace/{trace_id}"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]


def test_trace_ids_are_read_from_valid_traceparent_values_only() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of(good) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of(good.upper()) == "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in (None, 42, "", "garbage", good[:-1], good + "-extra",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"):
        assert trace_id_of(bad) is None, bad
    # a future version may append fields
    assert trace_id_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
    assert clean_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
    assert clean_trace_id("<script>") is None and clean_trace_id("0" * 32) is None


def test_a_trace_url_without_the_placeholder_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="FLOWER_OPS_TRACE_URL"):
        MonitorConfig.from_env({"FLOWER_OPS_TRACE_URL": "https://tracing.example/trace/"})
    with pytest.raises(ConfigError, match="FLOWER_OPS_TRACE_URL"):
        MonitorConfig.from_env({"FLOWER_OPS_TRACE_URL": "javascript:alert(1)//{trace_id}"})
    config = MonitorConfig.from_env({"FLOWER_OPS_TRACE_URL": TRACE_URL})
    assert config.trace_url == TRACE_URL


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(name),
                           monitor_env={**FAST_MONITOR_REFRESH,
                                        "FLOWER_OPS_TRACE_URL": TRACE_URL},
                           sync_env=FAST_SYNC_WORKER) as stack:
            yield stack
    finally:
        pg_service.drop_database(name)


@pytest.fixture(scope="module")
def traced(stack: Stack) -> Iterator[tuple[str, str, str]]:
    """(traced task id, its trace id, an untraced task id): the first sent
    inside an OpenTelemetry span, with Celery instrumented by OpenTelemetry."""
    from testing.apps import automation

    provider = TracerProvider()
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("flower-ops-test").start_as_current_span("nightly") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            task_id = automation.add.delay(1, 2).id
    finally:
        instrumentor.uninstrument()
    plain_id = automation.add.delay(3, 4).id
    for each in (task_id, plain_id):
        stack.wait_state(each, "SUCCESS")
        stack.wait_status(each, "success")
    yield task_id, trace_id, plain_id


@pytest.mark.browser
def test_the_page_links_to_the_trace(stack: Stack, traced: tuple[str, str, str],
                                     chromium_path: str) -> None:
    task_id, trace_id, _ = traced    # (before the test below restarts the monitor)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            context = browser.new_context(http_credentials={"username": "admin",
                                                            "password": "admin123"})
            page = context.new_page()
            page.goto(f"{stack.monitor.base_url}/monitoring")
            row = page.locator(f'#fo-tasks tr[data-task-id="{task_id}"]')
            row.locator('[data-action="details"]').click(timeout=30_000)
            link = page.locator('[data-testid="fo-trace-link"]')
            expect(link).to_have_text(trace_id, timeout=20_000)
            expect(link).to_have_attribute("href", f"https://tracing.example/trace/{trace_id}")
            expect(link).to_have_attribute("rel", "noopener noreferrer")
        finally:
            browser.close()


def test_the_trace_id_and_link_are_in_the_detail_from_memory_and_postgresql(
        stack: Stack, traced: tuple[str, str, str]) -> None:
    task_id, trace_id, plain_id = traced
    detail = stack.task(task_id)
    assert detail["trace_id"] == trace_id
    assert detail["trace_url"] == f"https://tracing.example/trace/{trace_id}"
    plain = stack.task(plain_id)
    assert plain["trace_id"] is None and plain["trace_url"] is None
    row = stack.row(task_id)
    assert row is not None and row["trace_id"] == trace_id
    assert stack.row(plain_id)["trace_id"] is None  # type: ignore[index]

    stack.restart_monitor()           # Flower's memory is empty: PostgreSQL answers
    stored = stack.task(task_id)
    assert stored["source"] == "db"
    assert (stored["trace_id"], stored["trace_url"]) == (trace_id, detail["trace_url"])
