"""Per-minute series kept in memory: finished tasks, runtimes per task name,
queue depths — the last 24 hours, in bounded memory whatever the load.

Fed on the IOLoop thread: ``observe`` is a task index observer (tasks that
reach SUCCESS or FAILURE), ``sample_queues`` hears each applied broker
snapshot. Everything is kept in fixed-size rings of ``MINUTES`` slots (a
slot remembers which minute it holds, so a stale slot reads as empty):

- completed / failed per minute, over every task;
- per task name (at most ``MAX_NAMES``, the most active; a new name past the
  cap replaces the least active): runs and failures per minute, the p50 /
  p95 of the runtimes of each minute (exact over up to
  ``SAMPLES_PER_MINUTE`` runs of a minute, a uniform sample beyond), the
  runtimes of its last ``RECENT_RUNS`` runs and its last failures;
- per queue (at most ``MAX_QUEUES``): ready messages at the minute's last sample.

Worst case about 20 MB (200 names and 200 queues, every slot used); nothing
grows with the number of tasks.
"""
from __future__ import annotations

import math
import random
import time
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flower_ops.core.lifecycle import api_state
from flower_ops.monitor.services.stats import percentile

MINUTES = 1440
MAX_NAMES = 200
MAX_QUEUES = 200
MAX_NAME_LENGTH = 256
SAMPLES_PER_MINUTE = 1000
RECENT_RUNS = 2000
RECENT_FAILURES = 5
NAN = float("nan")


def minute_of(epoch: float) -> int:
    return int(epoch // 60)


def _ring(typecode: str, value: float | int) -> array[Any]:
    return array(typecode, [value]) * MINUTES


@dataclass(frozen=True)
class Failure:
    at: float
    task_id: str
    exception: str | None


class NameSeries:
    """One task name's rings; its open minute's runtimes are kept as samples
    until a later minute begins."""

    def __init__(self) -> None:
        self.stamp = _ring("i", -1)
        self.runs = _ring("I", 0)
        self.failed = _ring("I", 0)
        self.p50 = _ring("d", NAN)
        self.p95 = _ring("d", NAN)
        self.open_minute = -1
        self.open_samples: list[float] = []
        self.open_seen = 0
        self.recent_at = array("d", [NAN]) * RECENT_RUNS
        self.recent_runtime = array("d", [NAN]) * RECENT_RUNS
        self.recent_next = 0
        self.failures: deque[Failure] = deque(maxlen=RECENT_FAILURES)
        self.total_runs = 0
        self.last_minute = -1

    def slot(self, minute: int) -> int:
        slot = minute % MINUTES
        if self.stamp[slot] != minute:
            self.stamp[slot] = minute
            self.runs[slot] = self.failed[slot] = 0
            self.p50[slot] = self.p95[slot] = NAN
        return slot

    def add(self, minute: int, at: float, failed: bool, runtime: float | None) -> None:
        slot = self.slot(minute)
        self.runs[slot] += 1
        if failed:
            self.failed[slot] += 1
        self.total_runs += 1
        self.last_minute = max(self.last_minute, minute)
        if runtime is None or not math.isfinite(runtime):
            return
        index = self.recent_next % RECENT_RUNS
        self.recent_at[index], self.recent_runtime[index] = at, runtime
        self.recent_next += 1
        if minute > self.open_minute:
            self.close()
            self.open_minute = minute
        if minute == self.open_minute:
            self.open_seen += 1
            if len(self.open_samples) < SAMPLES_PER_MINUTE:
                self.open_samples.append(runtime)
            else:  # a uniform sample of the minute's runtimes (reservoir)
                keep = random.randrange(self.open_seen)
                if keep < SAMPLES_PER_MINUTE:
                    self.open_samples[keep] = runtime
        # a late runtime of a closed minute counts as a run only

    def close(self) -> None:
        """The open minute's percentiles into its slot; its samples dropped."""
        if self.open_minute >= 0 and self.open_samples:
            slot = self.slot(self.open_minute)
            values = sorted(self.open_samples)
            self.p50[slot] = percentile(values, 0.50)
            self.p95[slot] = percentile(values, 0.95)
        self.open_samples = []
        self.open_seen = 0

    def percentiles(self, minute: int) -> tuple[float | None, float | None]:
        if minute == self.open_minute and self.open_samples:
            values = sorted(self.open_samples)
            return percentile(values, 0.50), percentile(values, 0.95)
        slot = minute % MINUTES
        if self.stamp[slot] != minute or math.isnan(self.p50[slot]):
            return None, None
        return self.p50[slot], self.p95[slot]

    def counts(self, minute: int) -> tuple[int, int]:
        slot = minute % MINUTES
        if self.stamp[slot] != minute:
            return 0, 0
        return self.runs[slot], self.failed[slot]

    def runtimes_between(self, since: float, until: float) -> list[float]:
        filled = min(self.recent_next, RECENT_RUNS)
        return [self.recent_runtime[i] for i in range(filled)
                if since <= self.recent_at[i] < until]


class SeriesRecorder:
    """The monitor's own per-minute history (IOLoop thread only)."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self._clock = clock
        self.started_at: float = clock()
        # minutes from this one on are complete in memory
        self.first_minute = minute_of(self.started_at) + 1
        self._stamp = _ring("i", -1)
        self._completed = _ring("I", 0)
        self._failed = _ring("I", 0)
        self.names: dict[str, NameSeries] = {}
        self.queues: dict[str, tuple[array[Any], array[Any]]] = {}
        self.observed = 0

    # -- feeding (IOLoop) ---------------------------------------------------------------

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        state = api_state(task.state)
        if state not in ("SUCCESS", "FAILURE"):
            return
        failed = state == "FAILURE"
        at = getattr(task, "failed" if failed else "succeeded", None) or self._clock()
        runtime = getattr(task, "runtime", None)
        self.record(name=task.name, task_id=uuid, at=float(at), failed=failed,
                    runtime=float(runtime) if runtime is not None else None,
                    exception=getattr(task, "exception", None))

    def record(self, *, name: str | None, task_id: str, at: float, failed: bool,
               runtime: float | None, exception: str | None = None) -> None:
        self.observed += 1
        now = self._clock()
        if at > now + 60:   # a worker's clock ahead of ours: now, not a future slot
            at = now
        minute = minute_of(at)
        if minute <= minute_of(now) - MINUTES:
            return  # older than the ring
        slot = minute % MINUTES
        if self._stamp[slot] != minute:
            if self._stamp[slot] > minute:
                return  # older than the ring: too late to count
            self._stamp[slot] = minute
            self._completed[slot] = self._failed[slot] = 0
        if failed:
            self._failed[slot] += 1
        else:
            self._completed[slot] += 1
        series = self._series_of(name, minute)
        if series is None:
            return
        series.add(minute, at, failed, runtime)
        if failed:
            series.failures.append(Failure(at=at, task_id=task_id,
                                           exception=None if exception is None
                                           else str(exception)[:1000]))

    def _series_of(self, name: str | None, minute: int) -> NameSeries | None:
        if not name or len(name) > MAX_NAME_LENGTH:
            return None
        series = self.names.get(name)
        if series is not None:
            return series
        if len(self.names) >= MAX_NAMES:
            horizon = minute - MINUTES
            victim = min(self.names, key=lambda n: (
                self.names[n].total_runs if self.names[n].last_minute > horizon else -1))
            del self.names[victim]
        series = self.names[name] = NameSeries()
        return series

    def sample_queues(self, depths: Mapping[str, int], taken_at: float) -> None:
        """Ready messages per queue at ``taken_at`` (one broker refresh)."""
        minute = minute_of(taken_at)
        slot = minute % MINUTES
        for name, messages in depths.items():
            ring = self.queues.get(name)
            if ring is None:
                if len(self.queues) >= MAX_QUEUES or len(name) > MAX_NAME_LENGTH:
                    continue
                ring = self.queues[name] = (_ring("i", -1), _ring("i", -1))
            stamp, depth = ring
            if stamp[slot] > minute:
                continue
            stamp[slot], depth[slot] = minute, int(messages)

    # -- reading (IOLoop) ---------------------------------------------------------------

    def memory_minutes(self, now: float | None = None) -> range:
        """The minutes memory answers for: since the first full minute after
        the start, at most the last ``MINUTES``, up to the current one."""
        current = minute_of(self._clock() if now is None else now)
        return range(max(self.first_minute, current - MINUTES + 1), current + 1)

    def counts(self, minute: int) -> tuple[int, int]:
        slot = minute % MINUTES
        if self._stamp[slot] != minute:
            return 0, 0
        return self._completed[slot], self._failed[slot]

    def queue_depth(self, name: str, minute: int) -> int | None:
        ring = self.queues.get(name)
        if ring is None:
            return None
        stamp, depth = ring
        slot = minute % MINUTES
        return depth[slot] if stamp[slot] == minute else None

    def name_runs(self, minutes: range) -> dict[str, tuple[int, int]]:
        """Runs and failures per tracked name over ``minutes`` (names that ran)."""
        out: dict[str, tuple[int, int]] = {}
        if len(minutes) == 0:
            return out
        lo, hi = minutes.start, minutes.stop - 1
        for name, series in self.names.items():
            if series.last_minute < lo:
                continue
            runs = failed = 0
            for stamp, r, f in zip(series.stamp, series.runs, series.failed, strict=True):
                if lo <= stamp <= hi:
                    runs += r
                    failed += f
            if runs:
                out[name] = (runs, failed)
        return out

    def memory_bytes(self) -> int:
        """A rough size of what is kept (the bounds' test)."""
        ring = 4 + 4 + 4 + 8 + 8
        per_name = MINUTES * ring + RECENT_RUNS * 16 + SAMPLES_PER_MINUTE * 8
        return (len(self.names) * per_name + len(self.queues) * MINUTES * 8 + MINUTES * 12)
