"""System statistics: counts by state, throughput, success rate, runtimes.

Everything is kept incrementally from index transitions, so ``/stats`` never
scans the tasks: per-second completion buckets for 1/5/15-minute throughput
and a bounded window of recent runtimes per task name for percentiles.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from flower_ops.core.lifecycle import TASK_STATES, api_state
from flower_ops.core.times import now_iso, with_times
from flower_ops.monitor.sources.task_index import TaskIndex

WINDOW_SECONDS = 900
RUNTIME_SAMPLES = 1000
PERCENTILES = ("p50", "p95", "p99")


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[rank]


class ThroughputTracker:
    def __init__(self) -> None:
        # second -> [succeeded, failed]
        self._buckets: dict[int, list[int]] = {}
        self._runtimes: dict[str, deque[float]] = {}
        # name -> percentiles, dropped when the name gets a new sample, so a
        # request sorts only the names that changed since the last one
        self._percentiles: dict[str, dict[str, float | int]] = {}
        self.observed = 0
        # cumulative, for Prometheus' flower_ops_tasks_finished_total{state}
        self.finished = {"SUCCESS": 0, "FAILURE": 0}

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        state = api_state(task.state)
        if state not in ("SUCCESS", "FAILURE"):
            return
        self.observed += 1
        self.finished[state] += 1
        at = getattr(task, "succeeded" if state == "SUCCESS" else "failed", None) or time.time()
        second = int(at)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = [0, 0]
            self._expire(second)
        bucket[0 if state == "SUCCESS" else 1] += 1
        runtime = getattr(task, "runtime", None)
        if runtime is not None and task.name:
            samples = self._runtimes.get(task.name)
            if samples is None:
                samples = self._runtimes[task.name] = deque(maxlen=RUNTIME_SAMPLES)
            samples.append(float(runtime))
            self._percentiles.pop(task.name, None)

    def _expire(self, newest: int) -> None:
        if len(self._buckets) > WINDOW_SECONDS + 60:
            cutoff = newest - WINDOW_SECONDS - 1
            for second in [s for s in self._buckets if s < cutoff]:
                del self._buckets[second]

    def summary(self, now: float | None = None) -> dict[str, Any]:
        now_s = int(now if now is not None else time.time())
        windows = {"1m": 60, "5m": 300, "15m": 900}
        result: dict[str, Any] = {}
        totals = {}
        for label, seconds in windows.items():
            ok = failed = 0
            for second in range(now_s - seconds + 1, now_s + 1):
                bucket = self._buckets.get(second)
                if bucket:
                    ok += bucket[0]
                    failed += bucket[1]
            totals[label] = (ok, failed)
            result[label] = round((ok + failed) / (seconds / 60), 3)
        ok15, failed15 = totals["15m"]
        done = ok15 + failed15
        return {
            "throughput_per_minute": result,
            "success_rate": round(ok15 / done, 4) if done else None,
            "success_rate_by_window": {label: (round(ok / (ok + bad), 4) if ok + bad else None)
                                       for label, (ok, bad) in totals.items()},
            "completed_15m": {"success": ok15, "failure": failed15},
        }

    def runtimes(self) -> dict[str, dict[str, Any]]:
        """Runtime percentiles per task name, as ``/stats`` says them (seconds
        rounded to the millisecond)."""
        out = {}
        for name in sorted(self._runtimes):
            cached = self._percentiles.get(name)
            out[name] = with_times(cached if cached is not None else self.runtimes_of(name),
                                   durations=PERCENTILES)
        return out

    def typical_runtime(self, name: str) -> tuple[float, int] | None:
        samples = self._runtimes.get(name)
        if not samples:
            return None
        cached = self._percentiles.get(name)
        if cached is None:
            cached = self.runtimes_of(name)
        return float(cached["p95"]), len(samples)

    def runtimes_of(self, name: str) -> dict[str, float | int]:
        values = sorted(self._runtimes.get(name) or ())
        stats: dict[str, float | int] = {
            "count": len(values),
            "p50": round(percentile(values, 0.50), 6),
            "p95": round(percentile(values, 0.95), 6),
            "p99": round(percentile(values, 0.99), 6),
        }
        if values:
            self._percentiles[name] = stats
        return stats


class StatsService:
    def __init__(self, *, index: TaskIndex, throughput: ThroughputTracker,
                 workers: Callable[[], dict[str, int]],
                 queues: Callable[[], dict[str, Any]],
                 alerts: Callable[[], list[dict[str, Any]] | Mapping[str, Any]],
                 capabilities: Callable[[], dict[str, Any]]) -> None:
        self.index = index
        self.throughput = throughput
        self._workers = workers
        self._queues = queues
        self._alerts = alerts
        self._capabilities = capabilities

    def stats(self) -> dict[str, Any]:
        self.index.sync()
        counts = self.index.count_by("state")
        by_state = {state: counts.get(state, 0) for state in TASK_STATES}
        for state, count in counts.items():
            by_state.setdefault(state, count)
        summary = self.throughput.summary()
        # A list of alerts, or a mapping: the list under "alerts" and its counts
        alerts = self._alerts()
        return {
            "tasks": {"total": len(self.index), "by_state": by_state},
            "throughput": summary["throughput_per_minute"],
            "success_rate": summary["success_rate"],
            "success_rate_by_window": summary["success_rate_by_window"],
            "completed_15m": summary["completed_15m"],
            "runtime": self.throughput.runtimes(),
            "workers": self._workers(),
            "queues": self._queues(),
            **(alerts if isinstance(alerts, Mapping) else {"alerts": alerts}),
            "capabilities": self._capabilities(),
            "generated_at": now_iso(),
        }
