"""The alert rules re-checked on every evaluation: what is backing up, offline
or saturated.

Evaluated about once a second on the IOLoop thread, so every rule is cheap:
workers from Flower's worker state, queues from the last broker snapshot.
Stuck and orphaned tasks are raised from changes instead (``task_alerts``);
they learn which workers are offline from ``offline_workers``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flower_ops.monitor.config import AlertThresholds
from flower_ops.monitor.health.alerts import (
    CRITICAL,
    QUEUE_BACKLOG,
    WARNING,
    WORKER_OFFLINE,
    WORKER_SATURATED,
    Finding,
    duration,
)

# Checked on every evaluation; other kinds are raised and resolved on change
EVALUATED_KINDS = (QUEUE_BACKLOG, WORKER_OFFLINE, WORKER_SATURATED)


class HealthRules:
    def __init__(self, *, state: Any, thresholds: AlertThresholds, queues: Any, workers: Any,
                 purge_offline_seconds: float | None = None) -> None:
        self.state = state
        self.thresholds = thresholds
        self.queues = queues
        self.workers = workers
        self.purge_offline_seconds = purge_offline_seconds
        # hostname -> first time seen offline (when the heartbeat expiry is unknown)
        self._offline_seen: dict[str, float] = {}
        self._busy_since: dict[str, float] = {}
        self._over_since: dict[str, float] = {}
        self._unconsumed_since: dict[str, float] = {}
        # Workers known to the state and offline at the last worker_findings
        # (including announced shutdowns): their running tasks are orphaned
        self.offline_workers: dict[str, float] = {}

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
        offline: dict[str, float] = {}
        self.offline_workers = offline
        for hostname, worker in list(self.state.workers.items()):
            since = self.offline_since(hostname, worker, now)
            if since is None:
                yield from self._saturation(hostname, worker, now)
                continue
            offline[hostname] = since
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
