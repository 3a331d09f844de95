"""``HealthMonitor``: the alert rules on a timer, the worker probe, the webhook.

Everything here runs on the IOLoop thread except the probe's broadcast (an
executor thread). ``evaluate`` is cheap enough for a one-second timer: it
re-checks the workers and the last queue snapshot, and only the tasks that
changed or whose stuck deadline passed (``task_alerts``).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback

from flower_ops.monitor.config import AlertThresholds
from flower_ops.monitor.health.alerts import AlertBook
from flower_ops.monitor.health.bus import AlertBus
from flower_ops.monitor.health.probe import WorkerProbe
from flower_ops.monitor.health.rules import EVALUATED_KINDS, HealthRules
from flower_ops.monitor.health.task_alerts import StartedTasks, TaskAlerts
from flower_ops.monitor.health.webhook import WebhookNotifier
from flower_ops.monitor.services.queues import QueueService
from flower_ops.monitor.services.stats import ThroughputTracker
from flower_ops.monitor.services.workers import WorkerService
from flower_ops.monitor.sources.task_index import TaskIndex

logger = logging.getLogger(__name__)

EVALUATE_INTERVAL_SECONDS = 1.0
# ``GET /stats`` lists the most severe active alerts only, with the counts
STATS_ALERTS = 100


class HealthMonitor:
    """The alert rules over the task index, the workers and the queues.

    Built by the composition root with what it reads; publishes every alert
    change on ``bus`` (through its ``AlertBook``).
    """

    def __init__(self, *, thresholds: AlertThresholds, bus: AlertBus, index: TaskIndex,
                 queues: QueueService, workers: WorkerService, throughput: ThroughputTracker,
                 probe: WorkerProbe, webhook: WebhookNotifier | None,
                 io_loop: IOLoop, probe_interval_seconds: float,
                 purge_offline_seconds: float | None = None) -> None:
        self.thresholds = thresholds
        self.index = index
        self.queues = queues
        self.workers = workers
        self.throughput = throughput
        self.probe = probe
        self.webhook = webhook
        self.io_loop = io_loop
        self.probe_interval_seconds = probe_interval_seconds
        self.book = AlertBook(bus=bus)
        self.started = StartedTasks()
        self.rules = HealthRules(
            state=index.state, thresholds=thresholds, queues=queues, workers=workers,
            purge_offline_seconds=purge_offline_seconds)
        self.task_alerts = TaskAlerts(
            started=self.started, book=self.book, thresholds=thresholds,
            typical_runtime=throughput.typical_runtime)
        self._timers: list[PeriodicCallback] = []

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        """Index observer: a task changed state."""
        self.started.observe(uuid, old_state, task)

    def forget_missing(self, changed: set[str]) -> None:
        """Index change listener: tasks Flower evicted are no longer running."""
        self.started.forget_missing(changed, self.index.state.tasks.data)

    def start(self) -> None:
        intervals = [(self.evaluate, EVALUATE_INTERVAL_SECONDS),
                     (self.probe.tick, self.probe_interval_seconds)]
        for callback, seconds in intervals:
            timer = PeriodicCallback(callback, seconds * 1000, jitter=0.1)
            timer.start()
            self._timers.append(timer)
        self.probe.tick()
        if self.webhook is not None:
            self.io_loop.spawn_callback(self.webhook.run)

    def stop(self) -> None:
        for timer in self._timers:
            timer.stop()
        self._timers.clear()
        if self.webhook is not None:
            self.webhook.stop()

    def evaluate(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            self.index.sync()
            findings = [*self.rules.worker_findings(now), *self.rules.queue_findings(now)]
            self.task_alerts.evaluate(now, self.rules.offline_workers)
        except Exception:
            logger.exception("alert evaluation failed")
            return
        self.book.update(findings, kinds=EVALUATED_KINDS, now=now)

    def stats_alerts(self) -> dict[str, Any]:
        """What ``GET /stats`` shows: the most severe active alerts and the counts."""
        counts = self.book.counts_by()
        return {"alerts": self.book.active_list(STATS_ALERTS),
                "alerts_total": self.book.active_count(),
                "alerts_by_kind": counts["by_kind"],
                "alerts_by_severity": counts["by_severity"]}

    def summary(self, *, limit: int | None = None, kind: str | None = None) -> dict[str, Any]:
        """What ``GET /alerts`` shows: active alerts (the first ``limit``, of
        ``kind`` when given), the recently resolved, thresholds, webhook."""
        counts = self.book.counts_by()
        return {
            "alerts": self.book.active_list(limit, kind=kind),
            "alerts_total": self.book.active_count(kind),
            "alerts_by_kind": counts["by_kind"],
            "alerts_by_severity": counts["by_severity"],
            "resolved": self.book.resolved_list(kind=kind),
            "thresholds": vars(self.thresholds).copy(),
            "webhook": (None if self.webhook is None else {
                "delivered": self.webhook.delivered, "dropped": self.webhook.dropped,
                "failed_attempts": self.webhook.failed_attempts,
                "left_to_peers": self.webhook.left_to_peers}),
            "worker_probe_error": self.probe.last_error,
        }
