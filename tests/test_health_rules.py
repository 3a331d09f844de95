"""The rules over Celery's own event state, fed with real event dicts: the
"far beyond its usual runtime" rule, stuck and orphaned tasks raised from
changes and resolved as soon as the condition ends, and a worker that
announced its shutdown raising no offline alert while one that went silent
does."""
from __future__ import annotations

import itertools
import time
from typing import Any

from celery.events.state import State

from flower_ops.core.times import iso_utc
from flower_ops.monitor.config import AlertThresholds
from flower_ops.monitor.health.alerts import ORPHANED_TASK, STUCK_TASK, WORKER_OFFLINE, AlertBook
from flower_ops.monitor.health.rules import HealthRules
from flower_ops.monitor.health.task_alerts import StartedTasks, TaskAlerts
from flower_ops.monitor.services.stats import ThroughputTracker


class NoQueues:
    snapshot = None


class WorkersFromState:
    def pool_usage(self, hostname: str, worker: Any) -> tuple[int | None, int | None]:
        return worker.active, 4

    def reserved_count(self, hostname: str) -> int | None:
        return 0

    def consumers_known(self) -> bool:
        return True


_clock = itertools.count(1)


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "local_received": fields.get("timestamp", time.time()),
            "clock": next(_clock), **fields}


class Health:
    """The rules and the task alerts wired as ``HealthMonitor`` wires them."""

    def __init__(self, thresholds: AlertThresholds) -> None:
        self.state = State()
        self.started = StartedTasks()
        self.throughput = ThroughputTracker()
        self.book = AlertBook()
        self.rules = HealthRules(state=self.state, thresholds=thresholds, queues=NoQueues(),
                                 workers=WorkersFromState())
        self.tasks = TaskAlerts(started=self.started, book=self.book, thresholds=thresholds,
                                typical_runtime=self.throughput.typical_runtime)

    def evaluate(self, now: float) -> dict[tuple[str, str], dict[str, Any]]:
        list(self.rules.worker_findings(now))
        self.tasks.evaluate(now, self.rules.offline_workers)
        return {(a["kind"], a["subject"]): a for a in self.book.active_list()}


def build(thresholds: AlertThresholds) -> tuple[State, StartedTasks, ThroughputTracker,
                                                HealthRules]:
    health = Health(thresholds)
    return health.state, health.started, health.throughput, health.rules


def run_task(state: State, started: StartedTasks, throughput: ThroughputTracker, uuid: str,
             at: float, runtime: float | None, host: str = "w1@h") -> None:
    state.event(event("task-received", uuid=uuid, name="report.build", hostname=host,
                      timestamp=at))
    state.event(event("task-started", uuid=uuid, hostname=host, timestamp=at))
    task = state.tasks[uuid]
    started.observe(uuid, "RECEIVED", task)
    if runtime is not None:
        state.event(event("task-succeeded", uuid=uuid, hostname=host, runtime=runtime,
                          timestamp=at + runtime, result="ok"))
        started.observe(uuid, "STARTED", task)
        throughput.observe(uuid, "STARTED", task)


def test_task_far_beyond_its_usual_runtime_is_stuck_below_the_threshold() -> None:
    limits = AlertThresholds(stuck_task_seconds=3600, stuck_runtime_factor=10,
                             stuck_min_samples=5, stuck_min_seconds=1.0)
    health = Health(limits)
    state, started, throughput = health.state, health.started, health.throughput
    now = time.time()
    state.event(event("worker-heartbeat", hostname="w1@h", freq=2.0, timestamp=now, active=1))
    for i in range(5):
        run_task(state, started, throughput, f"done-{i}", now - 100 + i, runtime=0.2)
    run_task(state, started, throughput, "slow", now - 5, runtime=None)
    assert started.ids == {"slow"}

    # Under the limit: nothing
    assert health.evaluate(now - 4) == {}
    alerts = health.evaluate(now)
    assert list(alerts) == [(STUCK_TASK, "slow")]
    alert = alerts[(STUCK_TASK, "slow")]
    assert alert["details"]["reason"] == "runtime"
    assert alert["details"]["limit_seconds"] == 2.0  # 10 x p95 0.2 s
    assert alert["since"] == iso_utc(now - 3)
    assert alert["details"]["started"] == iso_utc(now - 5)
    assert "usually takes 0.2s" in alert["message"]
    # One alert for as long as it lasts; its running time is read when shown
    assert [a["id"] for a in health.evaluate(now + 1).values()] == [alert["id"]]
    assert health.book.raised_total == 1
    assert health.book.active_list()[0]["details"]["running_seconds"] >= 5


def test_runtime_rule_applies_once_the_name_has_enough_runs() -> None:
    limits = AlertThresholds(stuck_task_seconds=3600, stuck_runtime_factor=10,
                             stuck_min_samples=5, stuck_min_seconds=1.0)
    health = Health(limits)
    state, started, throughput = health.state, health.started, health.throughput
    now = time.time()
    state.event(event("worker-heartbeat", hostname="w1@h", freq=2.0, timestamp=now, active=1))
    run_task(state, started, throughput, "slow", now - 5, runtime=None)
    assert health.evaluate(now) == {}  # no usual runtime yet: only the 1 h threshold
    for i in range(5):
        run_task(state, started, throughput, f"done-{i}", now - 100 + i, runtime=0.2)
    assert list(health.evaluate(now + 1)) == [(STUCK_TASK, "slow")]


def test_stuck_alert_resolves_as_soon_as_the_task_finishes() -> None:
    health = Health(AlertThresholds(stuck_task_seconds=10))
    state, started, throughput = health.state, health.started, health.throughput
    now = time.time()
    state.event(event("worker-heartbeat", hostname="w1@h", freq=2.0, timestamp=now, active=1))
    run_task(state, started, throughput, "long", now - 60, runtime=None)
    alerts = health.evaluate(now)
    assert alerts[(STUCK_TASK, "long")]["details"]["reason"] == "threshold"
    message = alerts[(STUCK_TASK, "long")]["message"]
    assert message.startswith("report.build [long] has been running for 6")  # 60 s, read now
    assert message.endswith("s on w1@h (threshold 10s)")
    state.event(event("task-succeeded", uuid="long", hostname="w1@h", runtime=60.0,
                      timestamp=now, result="ok"))
    started.observe("long", "STARTED", state.tasks["long"])
    # Resolved by the transition itself, before any evaluation
    assert health.book.active_list() == []
    assert health.book.resolved_list()[0]["subject"] == "long"
    assert health.evaluate(now + 60) == {}


def test_worker_going_offline_orphans_its_running_tasks_until_it_is_back() -> None:
    health = Health(AlertThresholds(stuck_task_seconds=10))
    state, started, throughput = health.state, health.started, health.throughput
    now = time.time()
    for host in ("w1@h", "w2@h"):
        state.event(event("worker-heartbeat", hostname=host, freq=2.0, timestamp=now, active=1))
    run_task(state, started, throughput, "on-w1", now - 60, runtime=None, host="w1@h")
    run_task(state, started, throughput, "on-w2", now - 60, runtime=None, host="w2@h")
    assert set(health.evaluate(now)) == {(STUCK_TASK, "on-w1"), (STUCK_TASK, "on-w2")}

    state.event(event("worker-offline", hostname="w1@h", timestamp=now + 1))
    alerts = health.evaluate(now + 2)
    # An orphan is not also stuck
    assert set(alerts) == {(ORPHANED_TASK, "on-w1"), (STUCK_TASK, "on-w2")}
    orphan = alerts[(ORPHANED_TASK, "on-w1")]
    assert orphan["severity"] == "critical" and orphan["details"]["worker"] == "w1@h"
    assert "was running on w1@h, which went offline" in orphan["message"]
    # Raised once, kept (the same alerts, by id)
    assert {k: a["id"] for k, a in health.evaluate(now + 3).items()} == \
        {k: a["id"] for k, a in alerts.items()}

    state.event(event("worker-heartbeat", hostname="w1@h", freq=2.0, timestamp=time.time(),
                      active=1))
    assert set(health.evaluate(now + 4)) == {(STUCK_TASK, "on-w1"), (STUCK_TASK, "on-w2")}
    assert health.book.resolved_list()[0]["kind"] == ORPHANED_TASK


def test_announced_shutdown_is_not_an_alert_but_lost_heartbeats_are() -> None:
    state, _, _, rules = build(AlertThresholds(worker_offline_seconds=0))
    old = time.time() - 60
    for host in ("quiet@h", "gone@h"):
        state.event(event("worker-heartbeat", hostname=host, freq=2.0, timestamp=old, active=0))
    state.event(event("worker-offline", hostname="quiet@h", timestamp=old + 1))
    findings = list(rules.worker_findings(time.time()))
    assert [(f.kind, f.subject) for f in findings] == [(WORKER_OFFLINE, "gone@h")]
    assert findings[0].since == old + 4.0  # last heartbeat + 2 x freq
