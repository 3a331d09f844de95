"""The rules over Celery's own event state, fed with real event dicts: the
"far beyond its usual runtime" rule, and a worker that announced its shutdown
raising no offline alert while one that went silent does."""
from __future__ import annotations

import itertools
import time
from typing import Any

from celery.events.state import State

from flower_ops.config import AlertThresholds
from flower_ops.health.alerts import STUCK_TASK, WORKER_OFFLINE
from flower_ops.health.rules import HealthRules, StartedTasks
from flower_ops.services.stats import ThroughputTracker


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


def build(thresholds: AlertThresholds) -> tuple[State, StartedTasks, ThroughputTracker,
                                                HealthRules]:
    state = State()
    started = StartedTasks()
    throughput = ThroughputTracker()
    rules = HealthRules(state=state, started=started, thresholds=thresholds,
                        typical_runtime=throughput.typical_runtime, queues=NoQueues(),
                        workers=WorkersFromState())
    return state, started, throughput, rules


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
    state, started, throughput, rules = build(limits)
    now = time.time()
    state.event(event("worker-heartbeat", hostname="w1@h", freq=2.0, timestamp=now, active=1))
    for i in range(5):
        run_task(state, started, throughput, f"done-{i}", now - 100 + i, runtime=0.2)
    run_task(state, started, throughput, "slow", now - 5, runtime=None)
    assert started.ids == {"slow"}

    findings = list(rules.task_findings(now))
    assert [(f.kind, f.subject) for f in findings] == [(STUCK_TASK, "slow")]
    assert findings[0].details["reason"] == "runtime"
    assert findings[0].details["limit_seconds"] == 2.0  # 10 x p95 0.2 s
    assert "usually takes 0.2s" in findings[0].message
    # Under the limit: nothing
    assert list(rules.task_findings(now - 4)) == []


def test_announced_shutdown_is_not_an_alert_but_lost_heartbeats_are() -> None:
    state, _, _, rules = build(AlertThresholds(worker_offline_seconds=0))
    old = time.time() - 60
    for host in ("quiet@h", "gone@h"):
        state.event(event("worker-heartbeat", hostname=host, freq=2.0, timestamp=old, active=0))
    state.event(event("worker-offline", hostname="quiet@h", timestamp=old + 1))
    findings = list(rules.worker_findings(time.time()))
    assert [(f.kind, f.subject) for f in findings] == [(WORKER_OFFLINE, "gone@h")]
    assert findings[0].since == old + 4.0  # last heartbeat + 2 x freq
