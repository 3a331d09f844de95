"""The alert rules: what is stuck, orphaned, backing up, offline or saturated.

Evaluated about once a second on the IOLoop thread, so every rule is cheap:
tasks are checked from the set of ids currently ``STARTED`` (kept by an index
observer, never a scan of all tasks), workers from Flower's worker state,
queues from the last broker snapshot.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..config import AlertThresholds
from .alerts import (
    CRITICAL,
    ORPHANED_TASK,
    QUEUE_BACKLOG,
    STUCK_TASK,
    WARNING,
    WORKER_OFFLINE,
    WORKER_SATURATED,
    Finding,
)


class StartedTasks:
    """Ids of tasks whose last known state is STARTED (an index observer)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        if task.state == "STARTED":
            self.ids.add(uuid)
        else:
            self.ids.discard(uuid)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class HealthRules:
    def __init__(self, *, state: Any, started: StartedTasks, thresholds: AlertThresholds,
                 typical_runtime: Callable[[str], tuple[float, int] | None],
                 queues: Any, workers: Any, purge_offline_seconds: float | None = None) -> None:
        self.state = state
        self.started = started
        self.thresholds = thresholds
        self.typical_runtime = typical_runtime
        self.queues = queues
        self.workers = workers
        self.purge_offline_seconds = purge_offline_seconds
        # hostname -> first time seen offline (when the heartbeat expiry is unknown)
        self._offline_seen: dict[str, float] = {}
        self._busy_since: dict[str, float] = {}
        self._over_since: dict[str, float] = {}
        self._unconsumed_since: dict[str, float] = {}

    # -- workers -----------------------------------------------------------------------

    def offline_since(self, hostname: str, worker: Any, now: float) -> float | None:
        """When ``worker`` went offline, or None while it is online."""
        if worker.alive:
            self._offline_seen.pop(hostname, None)
            return None
        first_seen = self._offline_seen.setdefault(hostname, now)
        if worker.heartbeats:
            return float(worker.heartbeat_expires)
        return first_seen

    def worker_findings(self, now: float) -> Iterator[Finding]:
        limits = self.thresholds
        for hostname, worker in list(self.state.workers.items()):
            since = self.offline_since(hostname, worker, now)
            if since is None:
                yield from self._saturation(hostname, worker, now)
                continue
            self._busy_since.pop(hostname, None)
            if not worker.heartbeats:
                # It announced its shutdown (worker-offline event): a deploy or a
                # scale-down, not a failure. /workers shows it offline.
                continue
            if self.purge_offline_seconds and now - since > self.purge_offline_seconds:
                continue
            if now - since < limits.worker_offline_seconds:
                continue
            last = worker.heartbeats[-1]
            yield Finding(
                kind=WORKER_OFFLINE, subject=hostname, severity=CRITICAL, since=since,
                message=f"worker {hostname} stopped sending heartbeats "
                        f"{duration(now - last)} ago",
                details={"worker": hostname, "last_heartbeat": last})

    def _saturation(self, hostname: str, worker: Any, now: float) -> Iterator[Finding]:
        active, slots = self.workers.pool_usage(hostname, worker)
        if not slots or active is None or active < slots:
            self._busy_since.pop(hostname, None)
            return
        since = self._busy_since.setdefault(hostname, now)
        if now - since < self.thresholds.saturated_seconds:
            return
        reserved = self.workers.reserved_count(hostname)
        waiting = f", {reserved} more reserved and waiting" if reserved else ""
        yield Finding(
            kind=WORKER_SATURATED, subject=hostname, severity=WARNING, since=since,
            message=f"worker {hostname}: all {slots} pool slots busy for "
                    f"{duration(now - since)}{waiting}",
            details={"worker": hostname, "active": active, "max_concurrency": slots,
                     "reserved": reserved})

    # -- tasks ------------------------------------------------------------------------

    def task_findings(self, now: float) -> Iterator[Finding]:
        tasks = self.state.tasks.data  # .data: reading must not reorder the LRU
        workers = self.state.workers
        limits = self.thresholds
        for uuid in list(self.started.ids):
            task = tasks.get(uuid)
            if task is None or task.state != "STARTED":
                self.started.ids.discard(uuid)
                continue
            name = task.name or "unknown task"
            hostname = getattr(task.worker, "hostname", None) if task.worker else None
            started = task.started or task.timestamp or now
            worker = workers.get(hostname) if hostname else None
            if worker is not None:
                offline = self.offline_since(hostname, worker, now)  # type: ignore[arg-type]
                if offline is not None:
                    yield Finding(
                        kind=ORPHANED_TASK, subject=uuid, severity=CRITICAL, since=offline,
                        message=f"{name} [{uuid}] was running on {hostname}, which went "
                                f"offline {duration(now - offline)} ago; it will not finish",
                        details={"task_id": uuid, "task_name": task.name, "worker": hostname,
                                 "started": started})
                    continue
            elapsed = now - started
            details = {"task_id": uuid, "task_name": task.name, "worker": hostname,
                       "started": started, "running_seconds": round(elapsed, 3)}
            if elapsed > limits.stuck_task_seconds:
                yield Finding(
                    kind=STUCK_TASK, subject=uuid, severity=WARNING,
                    since=started + limits.stuck_task_seconds,
                    message=f"{name} [{uuid}] has been running for {duration(elapsed)} on "
                            f"{hostname} (threshold {duration(limits.stuck_task_seconds)})",
                    details={**details, "reason": "threshold",
                             "threshold_seconds": limits.stuck_task_seconds})
                continue
            typical = self.typical_runtime(task.name) if task.name else None
            if typical is None or typical[1] < limits.stuck_min_samples:
                continue
            p95, samples = typical
            limit = max(p95 * limits.stuck_runtime_factor, limits.stuck_min_seconds)
            if elapsed > limit:
                yield Finding(
                    kind=STUCK_TASK, subject=uuid, severity=WARNING, since=started + limit,
                    message=f"{name} [{uuid}] has been running for {duration(elapsed)} on "
                            f"{hostname}; it usually takes {p95:.3g}s (p95 of {samples} runs)",
                    details={**details, "reason": "runtime", "usual_p95_seconds": p95,
                             "samples": samples, "limit_seconds": limit})

    # -- queues ------------------------------------------------------------------------

    def queue_findings(self, now: float) -> Iterator[Finding]:
        snapshot = self.queues.snapshot
        if snapshot is None:
            return
        limits = self.thresholds
        consumers_known = self.workers.consumers_known()
        for name, depth in snapshot.queues.items():
            messages = depth.messages
            if messages >= limits.backlog_messages:
                over = self._over_since.setdefault(name, now)
            else:
                self._over_since.pop(name, None)
                over = None
            consumers = depth.consumers
            if consumers is None and consumers_known:
                consumers = self.workers.consumers_by_queue().get(name, 0)
            if consumers == 0 and messages > 0:
                idle = self._unconsumed_since.setdefault(name, now)
            else:
                self._unconsumed_since.pop(name, None)
                idle = None
            growth = self.queues.growth(name, max(limits.backlog_seconds, 10.0), now)
            trend = f", +{growth} in the last minute" if growth and growth > 0 else ""
            age = depth.oldest_message_age_seconds
            oldest = f", oldest waiting {duration(age)}" if age is not None else ""
            details = {"queue": name, "messages": messages, "consumers": consumers,
                       "growth": growth, "oldest_message_age_seconds": age,
                       "threshold_messages": limits.backlog_messages}
            if idle is not None and now - idle >= limits.backlog_seconds:
                yield Finding(
                    kind=QUEUE_BACKLOG, subject=name, severity=CRITICAL, since=idle,
                    message=f"queue {name}: {messages} messages waiting and no consumer for "
                            f"{duration(now - idle)}{trend}{oldest}",
                    details={**details, "reason": "no_consumer"})
            elif over is not None and now - over >= limits.backlog_seconds:
                yield Finding(
                    kind=QUEUE_BACKLOG, subject=name, severity=WARNING, since=over,
                    message=f"queue {name}: {messages} messages waiting (threshold "
                            f"{limits.backlog_messages}) for {duration(now - over)}"
                            f"{trend}{oldest}",
                    details={**details, "reason": "threshold"})
        for table in (self._over_since, self._unconsumed_since):
            for name in [n for n in table if n not in snapshot.queues]:
                del table[name]
