"""``/series`` and ``/task-names``: the monitor's per-minute history
(``series.SeriesRecorder``), and PostgreSQL for what memory does not hold.

How the two are combined, one rule for each answer:

- ``/series``: a minute memory holds completely (from the first whole minute
  after the monitor started, at most the last 24 h) comes from memory; every
  earlier minute from PostgreSQL when ``DATABASE_URL`` is set (queue depths
  are not stored: null there), else it reads as nothing finished. No minute
  is answered by both.
- ``/task-names``: memory when it holds the whole window; PostgreSQL (the
  whole window, exact percentiles) when the window begins before that and
  ``DATABASE_URL`` is set; otherwise memory for what it holds.

Memory is read on the IOLoop thread; PostgreSQL on the executor.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from flower_ops.core.times import iso_utc, seconds
from flower_ops.db.insights import MinuteFigures, PgInsights
from flower_ops.monitor.services.series import SeriesRecorder
from flower_ops.monitor.services.stats import percentile
from flower_ops.monitor.sources.task_index import TaskIndex

# runtime series of at most this many names when ``names`` is not given
TOP_RUNTIME_NAMES = 50
SORTS = ("runs", "failure_rate", "p95", "name")


def _rounded(values: list[float | None]) -> list[float | None]:
    return [seconds(v) for v in values]


class InsightsService:
    def __init__(self, *, recorder: SeriesRecorder, index: TaskIndex,
                 insights: PgInsights | None,
                 run_blocking: Callable[..., asyncio.Future[Any]]) -> None:
        self.recorder = recorder
        self.index = index
        self.insights = insights
        self._run_blocking = run_blocking

    async def series(self, since: float, until: float, names: list[str] | None,
                     queues: list[str] | None) -> dict[str, Any]:
        """Per-minute series of the minutes that overlap [since, until)."""
        self.index.sync()
        recorder = self.recorder
        first, stop = int(since // 60), max(int(since // 60) + 1, math.ceil(until / 60))
        minutes = range(first, stop)
        held = recorder.memory_minutes()
        db_minutes = range(first, min(stop, held.start))
        mem_minutes = range(max(first, held.start), min(stop, held.stop))
        figures: MinuteFigures | None = None
        if self.insights is not None and len(db_minutes) > 0:
            figures = await self._run_blocking(
                self.insights.minutes, db_minutes.start * 60.0, db_minutes.stop * 60.0,
                names, TOP_RUNTIME_NAMES)
        if names is not None:
            chosen = sorted(set(names))
        else:
            runs = dict(figures.runs) if figures is not None else {}
            for name, (count, _failed) in recorder.name_runs(mem_minutes).items():
                runs[name] = runs.get(name, 0) + count
            chosen = sorted(sorted(runs, key=lambda n: (-runs[n], n))[:TOP_RUNTIME_NAMES])
        # minutes before db_minutes cannot be; after mem_minutes: the future
        after = len(minutes) - len(db_minutes) - len(mem_minutes)
        completed = [0] * len(db_minutes)
        failed = [0] * len(db_minutes)
        if figures is not None:
            completed = [figures.completed.get(m, 0) for m in db_minutes]
            failed = [figures.failed.get(m, 0) for m in db_minutes]
        counts = [recorder.counts(m) for m in mem_minutes]
        completed += [ok for ok, _ in counts] + [0] * after
        failed += [bad for _, bad in counts] + [0] * after
        runtime: dict[str, dict[str, list[float | None]]] = {}
        none: tuple[None, None] = (None, None)
        for name in chosen:
            stored = figures.runtime.get(name, {}) if figures is not None else {}
            pairs: list[tuple[float | None, float | None]] = [
                stored.get(m, none) for m in db_minutes]
            series = recorder.names.get(name)
            pairs += ([series.percentiles(m) for m in mem_minutes] if series is not None
                      else [none] * len(mem_minutes))
            pairs += [none] * after
            runtime[name] = {"p50": _rounded([p for p, _ in pairs]),
                             "p95": _rounded([p for _, p in pairs])}
        queue_names = sorted(recorder.queues) if queues is None else sorted(set(queues))
        return {
            "step_seconds": 60, "since": iso_utc(first * 60), "until": iso_utc(until),
            "source": "memory+db" if figures is not None else "memory",
            "memory_since": iso_utc(held.start * 60),
            "minutes": [iso_utc(m * 60) for m in minutes],
            "completed": completed, "failed": failed,
            # sampled only by this monitor, so memory's for every minute it sampled
            "queues": {name: [recorder.queue_depth(name, m) for m in minutes]
                       for name in queue_names},
            "runtime": runtime,
        }

    async def task_names(self, since: float, until: float, sort: str,
                         limit: int) -> dict[str, Any]:
        self.index.sync()
        held = self.recorder.memory_minutes()
        if self.insights is not None and since < held.start * 60:
            rows = await self._run_blocking(self.insights.names, since, until)
            source = "db"
        else:
            rows = self._names_from_memory(since, until, held)
            source = "memory"
        for row in rows:
            row["failure_rate"] = round(row["failed"] / row["runs"], 4) if row["runs"] else None
            for key in ("p50", "p95", "p99"):
                row[key] = seconds(row[key])
            failure = row["last_failure"]
            if failure is not None:
                failure["at"] = iso_utc(failure["at"])
        rows.sort(key=_SORT_KEYS[sort])
        return {"since": iso_utc(since), "until": iso_utc(until), "source": source,
                "names": rows[:limit]}

    def _names_from_memory(self, since: float, until: float,
                           held: range) -> list[dict[str, Any]]:
        minutes = range(max(int(since // 60), held.start),
                        min(math.ceil(until / 60), held.stop))
        out = []
        for name, (runs, failed) in self.recorder.name_runs(minutes).items():
            series = self.recorder.names[name]
            values = sorted(series.runtimes_between(since, until))
            failure = next((f for f in reversed(series.failures) if since <= f.at < until),
                           None)
            out.append({
                "name": name, "runs": runs, "succeeded": runs - failed, "failed": failed,
                "p50": percentile(values, 0.50) if values else None,
                "p95": percentile(values, 0.95) if values else None,
                "p99": percentile(values, 0.99) if values else None,
                "last_failure": None if failure is None else {
                    "id": failure.task_id, "at": failure.at, "exception": failure.exception},
            })
        return out


def _desc_nulls_last(key: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
        value = row[key]
        return (value is None, -(value or 0), -row["runs"], row["name"])
    return sort_key


_SORT_KEYS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    "runs": lambda row: (-row["runs"], row["name"]),
    "failure_rate": _desc_nulls_last("failure_rate"),
    "p95": _desc_nulls_last("p95"),
    "name": lambda row: (row["name"],),
}
