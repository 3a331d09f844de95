"""Stuck and orphaned task alerts, driven by changes rather than re-checked.

``StartedTasks`` (an index observer) keeps the tasks whose last known state
is ``STARTED``, by id and by worker. ``TaskAlerts`` turns them into alerts:

* a task's stuck deadline is computed once, when it is first seen
  ``STARTED`` (its start + the stuck limit for its name), and kept in a
  min-heap; each evaluation pops only the deadlines that have passed and
  re-checks those tasks (a heap entry whose task left ``STARTED``, or started
  again, is stale and dropped);
* a task whose name had too few runtimes for the runtime rule waits under
  its name; once the name has enough, its deadlines are recomputed (once);
* when a worker goes offline its ``STARTED`` tasks are orphaned (their stuck
  alerts resolved); when it is back the orphans are resolved and the tasks
  can be stuck again;
* when a task leaves ``STARTED`` its alerts are resolved at once.

So an evaluation costs O(changes), never O(tasks running). Messages that say
how long a task has run are rendered when read (``Elapsed``).
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, KeysView, Mapping
from dataclasses import dataclass
from typing import Any

from flower_ops.monitor.config import AlertThresholds
from flower_ops.monitor.health.alerts import (
    CRITICAL,
    ORPHANED_TASK,
    STUCK_TASK,
    WARNING,
    AlertBook,
    Elapsed,
    Finding,
    duration,
)

STARTED = "STARTED"
# Stuck alerts raised per evaluation at most (the rest wait for the next one):
# after a restart with thousands of long-running tasks, raising them all at
# once would hold the IOLoop for a third of a second.
MAX_RAISES_PER_EVALUATION = 1000
# Raising is paced so one evaluation never holds the IOLoop long: requests
# wait behind it. A backlog of overdue tasks is raised over several ticks.
MAX_RAISE_SECONDS_PER_EVALUATION = 0.008


@dataclass(frozen=True)
class StartedTask:
    uuid: str
    name: str | None
    worker: str | None
    started: float   # epoch seconds


class StartedTasks:
    """Tasks whose last known state is STARTED (an index observer).

    ``left_listeners`` are called with the ``StartedTask`` as soon as a task
    leaves STARTED (or is evicted from Flower's state); ``entered`` lists the
    ids that entered since the last ``take_entered()``.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, StartedTask] = {}
        self.by_worker: dict[str, set[str]] = {}
        self.entered: list[str] = []
        self.left_listeners: list[Callable[[StartedTask], None]] = []

    @property
    def ids(self) -> KeysView[str]:
        return self.tasks.keys()

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        if task.state == STARTED:
            self._leave(uuid)  # started again (after a retry): a new run
            worker = getattr(task.worker, "hostname", None) if task.worker else None
            record = StartedTask(uuid=uuid, name=task.name, worker=worker,
                                 started=float(task.started or task.timestamp or time.time()))
            self.tasks[uuid] = record
            if worker is not None:
                self.by_worker.setdefault(worker, set()).add(uuid)
            self.entered.append(uuid)
        else:
            self._leave(uuid)

    def forget_missing(self, changed: Iterable[str], present: Mapping[str, Any]) -> None:
        """A ``TaskIndex`` change listener: tasks evicted from the state leave too."""
        tasks = self.tasks
        for uuid in changed:
            if uuid in tasks and uuid not in present:
                self._leave(uuid)

    def take_entered(self) -> list[str]:
        entered, self.entered = self.entered, []
        return entered

    def _leave(self, uuid: str) -> None:
        record = self.tasks.pop(uuid, None)
        if record is None:
            return
        if record.worker is not None:
            running = self.by_worker.get(record.worker)
            if running is not None:
                running.discard(uuid)
                if not running:
                    del self.by_worker[record.worker]
        for listener in self.left_listeners:
            listener(record)


class TaskAlerts:
    """Raises and resolves ``stuck_task`` and ``orphaned_task`` alerts."""

    def __init__(self, *, started: StartedTasks, book: AlertBook, thresholds: AlertThresholds,
                 typical_runtime: Callable[[str], tuple[float, int] | None]) -> None:
        self.started = started
        self.book = book
        self.thresholds = thresholds
        self.typical_runtime = typical_runtime
        # (deadline, uuid, started): popped when the deadline passes
        self._deadlines: list[tuple[float, str, float]] = []
        # name -> {uuid: started} of tasks whose deadline ignored the runtime
        # rule because the name had too few runtimes then
        self._awaiting_samples: dict[str, dict[str, float]] = {}
        # hostname -> when it went offline, for workers whose tasks are orphaned
        self.offline: dict[str, float] = {}
        self._typical: dict[str, tuple[float, int] | None] = {}
        started.left_listeners.append(self._left)

    def evaluate(self, now: float, offline_workers: Mapping[str, float]) -> None:
        """One evaluation: ``offline_workers`` maps the hostnames offline now to
        when they went offline."""
        self._typical = {}  # runtimes per name, read at most once per evaluation
        try:
            self._workers(offline_workers, now)
            self._admit(now)
            self._samples_arrived()
            self._due(now)
        finally:
            self._typical = {}

    # -- the steps -------------------------------------------------------------------

    def _workers(self, offline_workers: Mapping[str, float], now: float) -> None:
        running = self.started.by_worker
        for hostname, since in offline_workers.items():
            if hostname in self.offline:
                continue
            self.offline[hostname] = since
            for uuid in list(running.get(hostname, ())):
                self._orphan(self.started.tasks[uuid], since, now)
        for hostname in [h for h in self.offline if h not in offline_workers]:
            del self.offline[hostname]
            for uuid in list(running.get(hostname, ())):
                record = self.started.tasks[uuid]
                self.book.resolve((ORPHANED_TASK, uuid), now)
                self._schedule(record)

    def _admit(self, now: float) -> None:
        tasks = self.started.tasks
        for uuid in self.started.take_entered():
            record = tasks.get(uuid)
            if record is None:
                continue  # already left
            since = self.offline.get(record.worker) if record.worker is not None else None
            if since is not None:
                self._orphan(record, since, now)
            self._schedule(record)

    def _samples_arrived(self) -> None:
        if not self._awaiting_samples:
            return
        tasks = self.started.tasks
        for name in list(self._awaiting_samples):
            if self._runtime_limit(name) is None:
                continue
            for uuid, started in self._awaiting_samples.pop(name).items():
                record = tasks.get(uuid)
                if record is not None and record.started == started:
                    self._schedule(record)

    def _due(self, now: float) -> None:
        heap = self._deadlines
        tasks = self.started.tasks
        limits = self.thresholds
        budget = MAX_RAISES_PER_EVALUATION
        stop_at = time.perf_counter() + MAX_RAISE_SECONDS_PER_EVALUATION
        while heap and heap[0][0] < now and budget > 0 and time.perf_counter() < stop_at:
            _, uuid, started = heapq.heappop(heap)
            record = tasks.get(uuid)
            if record is None or record.started != started:
                continue  # stale: the task left STARTED, or started again
            if record.worker is not None and record.worker in self.offline:
                continue  # orphaned, not stuck; rescheduled when its worker is back
            elapsed = now - started
            if elapsed > limits.stuck_task_seconds:
                budget -= self.book.raise_alert(self._stuck_over_threshold(record, now), now)
                continue
            runtime = self._runtime_limit(record.name)
            if runtime is not None and elapsed > runtime[0]:
                budget -= self.book.raise_alert(self._stuck_over_runtime(record, runtime, now),
                                                now)
                continue
            # Its name's usual runtime grew since the deadline was set
            self._schedule(record)

    # -- helpers ---------------------------------------------------------------------

    def _runtime_limit(self, name: str | None) -> tuple[float, float, int] | None:
        """(limit, p95, samples) of the runtime rule for ``name``, when it applies."""
        if not name:
            return None
        if name in self._typical:
            typical = self._typical[name]
        else:
            typical = self._typical[name] = self.typical_runtime(name)
        limits = self.thresholds
        if typical is None or typical[1] < limits.stuck_min_samples:
            return None
        p95, samples = typical
        return max(p95 * limits.stuck_runtime_factor, limits.stuck_min_seconds), p95, samples

    def _schedule(self, record: StartedTask) -> None:
        limit = self.thresholds.stuck_task_seconds
        runtime = self._runtime_limit(record.name)
        if runtime is not None:
            limit = min(limit, runtime[0])
        elif record.name and self.thresholds.stuck_min_seconds < limit:
            waiting = self._awaiting_samples.setdefault(record.name, {})
            waiting[record.uuid] = record.started
        heapq.heappush(self._deadlines, (record.started + limit, record.uuid, record.started))

    def _left(self, record: StartedTask) -> None:
        now = time.time()
        self.book.resolve((STUCK_TASK, record.uuid), now)
        self.book.resolve((ORPHANED_TASK, record.uuid), now)
        if record.name:
            waiting = self._awaiting_samples.get(record.name)
            if waiting is not None:
                waiting.pop(record.uuid, None)
                if not waiting:
                    del self._awaiting_samples[record.name]

    def _orphan(self, record: StartedTask, since: float, now: float) -> None:
        name = record.name or "unknown task"
        self.book.resolve((STUCK_TASK, record.uuid), now)
        elapsed = Elapsed(since=since,
                          head=f"{name} [{record.uuid}] was running on {record.worker}, "
                               "which went offline ",
                          tail=" ago; it will not finish")
        self.book.raise_alert(Finding(
            kind=ORPHANED_TASK, subject=record.uuid, severity=CRITICAL, since=since,
            message=elapsed.message(now), elapsed=elapsed,
            details={"task_id": record.uuid, "task_name": record.name,
                     "worker": record.worker, "started": record.started}), now)

    def _details(self, record: StartedTask, now: float) -> dict[str, Any]:
        return {"task_id": record.uuid, "task_name": record.name, "worker": record.worker,
                "started": record.started, "running_seconds": round(now - record.started, 3)}

    def _stuck_over_threshold(self, record: StartedTask, now: float) -> Finding:
        threshold = self.thresholds.stuck_task_seconds
        elapsed = Elapsed(since=record.started,
                          head=f"{record.name or 'unknown task'} [{record.uuid}] has been "
                               "running for ",
                          tail=f" on {record.worker} (threshold {duration(threshold)})",
                          detail="running_seconds")
        return Finding(
            kind=STUCK_TASK, subject=record.uuid, severity=WARNING,
            since=record.started + threshold, message=elapsed.message(now), elapsed=elapsed,
            details={**self._details(record, now), "reason": "threshold",
                     "threshold_seconds": threshold})

    def _stuck_over_runtime(self, record: StartedTask, runtime: tuple[float, float, int],
                            now: float) -> Finding:
        limit, p95, samples = runtime
        elapsed = Elapsed(since=record.started,
                          head=f"{record.name or 'unknown task'} [{record.uuid}] has been "
                               "running for ",
                          tail=f" on {record.worker}; it usually takes {p95:.3g}s "
                               f"(p95 of {samples} runs)",
                          detail="running_seconds")
        return Finding(
            kind=STUCK_TASK, subject=record.uuid, severity=WARNING, since=record.started + limit,
            message=elapsed.message(now), elapsed=elapsed,
            details={**self._details(record, now), "reason": "runtime",
                     "usual_p95_seconds": p95, "samples": samples, "limit_seconds": limit})
