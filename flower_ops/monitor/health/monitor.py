"""``HealthMonitor``: the alert rules on a timer, the worker probe, the webhook.

Everything here runs on the IOLoop thread except the probe's broadcast (an
executor thread). ``evaluate`` is cheap enough for a one-second timer: it
re-checks the workers and the last queue snapshot, and only the tasks that
changed or whose stuck deadline passed (``task_alerts``).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tornado.ioloop import PeriodicCallback

from flower_ops.monitor.health.alerts import AlertBook
from flower_ops.monitor.health.probe import WorkerProbe
from flower_ops.monitor.health.rules import EVALUATED_KINDS, HealthRules
from flower_ops.monitor.health.task_alerts import StartedTasks, TaskAlerts
from flower_ops.monitor.health.webhook import WebhookNotifier

if TYPE_CHECKING:
    from flower_ops.monitor.app import FlowerOps

logger = logging.getLogger(__name__)

EVALUATE_INTERVAL_SECONDS = 1.0
# ``GET /stats`` lists the most severe active alerts only, with the counts
STATS_ALERTS = 100


class HealthMonitor:
    def __init__(self, ops: FlowerOps) -> None:
        self.ops = ops
        config = ops.config
        options = ops.flower.options
        state = ops.index.state
        self.book = AlertBook()
        self.started = StartedTasks()
        inspect_timeout_ms = getattr(options, "inspect_timeout", None) or 1000.0
        self.probe = WorkerProbe(
            capp=ops.flower.capp, run_blocking=ops.run_blocking,
            timeout_seconds=max(0.5, float(inspect_timeout_ms) / 1000.0),
            has_live_workers=lambda: any(w.alive for w in list(state.workers.values())))
        ops.workers.probed = self.probe.replies
        purge = getattr(options, "purge_offline_workers", None)
        self.rules = HealthRules(
            state=state, thresholds=config.alerts, queues=ops.queues, workers=ops.workers,
            purge_offline_seconds=float(purge) if purge else None)
        self.task_alerts = TaskAlerts(
            started=self.started, book=self.book, thresholds=config.alerts,
            typical_runtime=ops.throughput.typical_runtime)
        self.webhook: WebhookNotifier | None = None
        if config.alert_webhook_url:
            self.webhook = WebhookNotifier(url=config.alert_webhook_url)
            self.book.listeners.append(self.webhook.notify)
        self._timers: list[PeriodicCallback] = []

    def start(self) -> None:
        intervals = [(self.evaluate, EVALUATE_INTERVAL_SECONDS),
                     (self.probe.tick, self.ops.config.inspect_interval_seconds)]
        for callback, seconds in intervals:
            timer = PeriodicCallback(callback, seconds * 1000, jitter=0.1)
            timer.start()
            self._timers.append(timer)
        self.probe.tick()
        if self.webhook is not None:
            self.ops.io_loop.spawn_callback(self.webhook.run)

    def stop(self) -> None:
        for timer in self._timers:
            timer.stop()
        self._timers.clear()
        if self.webhook is not None:
            self.webhook.stop()

    def evaluate(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            self.ops.index.sync()
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
            "thresholds": vars(self.ops.config.alerts).copy(),
            "webhook": (None if self.webhook is None else {
                "delivered": self.webhook.delivered, "dropped": self.webhook.dropped,
                "failed_attempts": self.webhook.failed_attempts}),
            "worker_probe_error": self.probe.last_error,
        }
