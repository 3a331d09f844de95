"""The alert book and the webhook notifier on their own: no duplicates,
automatic resolution, isolated listeners, bounded and non-blocking delivery
with capped backoff."""
from __future__ import annotations

import time
from typing import Any

import pytest

from flower_ops.core.env import ConfigError
from flower_ops.monitor.config import MonitorConfig
from flower_ops.monitor.health.alerts import (
    CRITICAL,
    KINDS,
    QUEUE_BACKLOG,
    STUCK_TASK,
    WARNING,
    AlertBook,
    Finding,
)
from flower_ops.monitor.health.webhook import WebhookNotifier


def stuck(subject: str, severity: str = WARNING) -> Finding:
    return Finding(kind=STUCK_TASK, subject=subject, severity=severity, since=100.0,
                   message=f"task {subject} is stuck")


def test_a_persisting_condition_raises_one_alert_and_resolves_when_it_ends() -> None:
    book = AlertBook()
    events: list[tuple[str, str]] = []
    book.bus.subscribe(lambda event, alert: events.append((event, alert["id"])))

    for now in (1.0, 2.0, 3.0):
        book.update([stuck("a")], kinds=KINDS, now=now)
    assert len(book.active_list()) == 1
    alert = book.active_list()[0]
    assert (alert["kind"], alert["subject"], alert["severity"]) == (STUCK_TASK, "a", WARNING)
    assert alert["since"] == "1970-01-01T00:01:40.000Z"
    assert alert["raised_at"] == "1970-01-01T00:00:01.000Z"

    book.update([], kinds=KINDS, now=4.0)
    assert book.active_list() == []
    assert book.resolved_list()[0]["resolved_at"] == "1970-01-01T00:00:04.000Z"
    assert events == [("raised", alert["id"]), ("resolved", alert["id"])]

    # The same condition coming back is a new alert with a new id
    book.update([stuck("a")], kinds=KINDS, now=5.0)
    assert book.active_list()[0]["id"] != alert["id"]


def test_severity_change_updates_in_place_and_kinds_not_checked_stay_active() -> None:
    book = AlertBook()
    events: list[str] = []
    book.bus.subscribe(lambda event, alert: events.append(event))
    backlog = Finding(kind=QUEUE_BACKLOG, subject="q", severity=WARNING, since=1.0,
                      message="queue q backlog")
    book.update([backlog, stuck("a")], kinds=KINDS, now=1.0)
    book.update([Finding(**{**backlog.__dict__, "severity": CRITICAL})], kinds=[QUEUE_BACKLOG],
                now=2.0)
    by_kind = {a["kind"]: a for a in book.active_list()}
    assert by_kind[QUEUE_BACKLOG]["severity"] == CRITICAL
    assert STUCK_TASK in by_kind  # not evaluated this round, so not resolved
    assert events == ["raised", "raised", "updated"]
    assert book.counts() == {(QUEUE_BACKLOG, CRITICAL): 1, (STUCK_TASK, WARNING): 1}


def test_a_failing_listener_does_not_stop_the_others() -> None:
    book = AlertBook()
    seen: list[str] = []

    def broken(event: str, alert: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    book.bus.subscribe(broken)
    book.bus.subscribe(lambda event, alert: seen.append(event))
    book.update([stuck("a")], kinds=KINDS, now=1.0)
    assert seen == ["raised"]


def test_webhook_notify_never_blocks_and_its_queue_is_bounded() -> None:
    notifier = WebhookNotifier(url="http://127.0.0.1:9/unreachable", queue_size=10)
    started = time.monotonic()
    for i in range(1000):
        notifier.notify("raised", {"id": str(i)})
    assert time.monotonic() - started < 1.0
    assert notifier.dropped == 990
    notifier.notify("updated", {"id": "x"})  # only raise and resolve are sent
    assert notifier.dropped == 990


def test_webhook_backoff_is_capped_and_jittered() -> None:
    notifier = WebhookNotifier(url="http://127.0.0.1:9/", backoff_initial_seconds=0.5,
                               backoff_max_seconds=60.0)
    delays = [notifier.backoff_seconds(attempt) for attempt in range(1, 30)]
    assert all(0 < d <= 60.0 for d in delays)
    assert max(delays) > 30.0
    assert len({round(d, 6) for d in delays[10:]}) > 1  # jitter


@pytest.mark.parametrize("variable, value", [
    ("FLOWER_OPS_STUCK_MIN_SECONDS", "-1"),
    ("FLOWER_OPS_STUCK_TASK_SECONDS", "soon"),
    ("FLOWER_OPS_ALERT_WEBHOOK_URL", "ftp://example.com/hook"),
])
def test_bad_alert_setting_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        MonitorConfig.from_env({variable: value})
    assert error.value.variable == variable


def test_active_alerts_are_listed_most_severe_then_oldest_with_limit_kind_and_counts() -> None:
    book = AlertBook()
    for i in range(10):
        book.raise_alert(Finding(kind=STUCK_TASK, subject=f"t{i}", severity=WARNING,
                                 since=100.0 - i, message=f"task t{i} is stuck"), now=1.0)
    book.raise_alert(Finding(kind=QUEUE_BACKLOG, subject="q", severity=CRITICAL, since=200.0,
                             message="queue q backlog"), now=1.0)
    assert [a["subject"] for a in book.active_list(4)] == ["q", "t9", "t8", "t7"]
    assert [a["subject"] for a in book.active_list(2, kind=STUCK_TASK)] == ["t9", "t8"]
    assert book.active_count() == 11 and book.active_count(STUCK_TASK) == 10
    counts = book.counts_by()
    assert counts["by_kind"][STUCK_TASK] == 10 and counts["by_kind"]["worker_offline"] == 0
    assert counts["by_severity"] == {WARNING: 10, CRITICAL: 1}

    # Raising an active condition again changes nothing; resolving is immediate
    assert book.raise_alert(stuck("t0"), now=2.0) is False
    assert book.resolve((STUCK_TASK, "t9"), now=3.0) is True
    assert book.resolve((STUCK_TASK, "t9"), now=3.0) is False
    assert [a["subject"] for a in book.active_list(2)] == ["q", "t8"]
    assert book.counts() == {(STUCK_TASK, WARNING): 9, (QUEUE_BACKLOG, CRITICAL): 1}


def test_an_unchanged_finding_does_not_rewrite_the_alert() -> None:
    book = AlertBook()
    backlog = Finding(kind=QUEUE_BACKLOG, subject="q", severity=WARNING, since=1.0,
                      message="queue q backlog", details={"messages": 100})
    book.update([backlog], kinds=[QUEUE_BACKLOG], now=1.0)
    first = book.active[backlog.key]
    book.update([backlog], kinds=[QUEUE_BACKLOG], now=2.0)
    assert book.active[backlog.key] is first
    book.update([Finding(**{**backlog.__dict__, "details": {"messages": 150}})],
                kinds=[QUEUE_BACKLOG], now=3.0)
    assert book.active_list()[0]["details"] == {"messages": 150}


def test_an_alert_storm_is_logged_within_a_budget_and_summed_up(
        caplog: pytest.LogCaptureFixture) -> None:
    book = AlertBook()
    caplog.set_level("INFO", logger="flower_ops.monitor.health.alerts")
    book.update([stuck(f"t{i}") for i in range(1000)], kinds=KINDS, now=10.0)
    assert len(book.active_list()) == 1000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == book.log.per_window
    assert all(line.startswith("alert raised: [warning] task t") for line in lines)

    caplog.clear()
    book.update([], kinds=KINDS, now=30.0)        # all resolve, same window
    assert caplog.records == []
    book.update([], kinds=KINDS, now=75.0)        # the window ends: one summary line
    summary = [r.getMessage() for r in caplog.records]
    assert summary == ["980 more alerts raised and 1000 resolved in the last 65s "
                       "(not logged one by one; GET /alerts lists them)"]

    caplog.clear()
    book.update([stuck("again")], kinds=KINDS, now=80.0)   # a new window logs again
    assert [r.getMessage() for r in caplog.records] == ["alert raised: [warning] task again is stuck"]
