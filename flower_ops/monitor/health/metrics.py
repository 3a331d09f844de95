"""Prometheus metrics next to Flower's own ``/metrics``.

One collector in ``prometheus_client``'s default registry (the one Flower's
``/metrics`` serves), registered once per process. It computes the values at
scrape time from the newest installed plugin's state: no bookkeeping per
event, and nothing to unregister when a test builds another Flower app.
Flower's handler scrapes on the IOLoop thread, which is where that state lives.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from flower_ops.monitor.health.alerts import KINDS, SEVERITIES

if TYPE_CHECKING:
    from flower_ops.monitor.health.monitor import HealthMonitor

# alerts, messages, unacked, consumers, oldest age, memory; tasks finished
_Families = tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily,
                  GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]

_lock = threading.Lock()
_collector: HealthCollector | None = None


class HealthCollector(Collector):
    def __init__(self) -> None:
        self._health: weakref.ref[HealthMonitor] | None = None

    def attach(self, health: HealthMonitor) -> None:
        self._health = weakref.ref(health)

    def describe(self) -> Iterator[Any]:
        return iter(self._families())

    def collect(self) -> Iterator[Any]:
        health = self._health() if self._health is not None else None
        families = self._families()
        if health is not None:
            self._fill(health, *families)
        return iter(families)

    @staticmethod
    def _families() -> _Families:
        return (
            GaugeMetricFamily("flower_ops_alerts_active", "Active Flower Ops alerts",
                              labels=["kind", "severity"]),
            GaugeMetricFamily("flower_ops_queue_messages",
                              "Ready messages in the queue (priority sub-queues summed)",
                              labels=["queue"]),
            GaugeMetricFamily("flower_ops_queue_unacked_messages",
                              "Messages delivered to a worker and not yet acknowledged",
                              labels=["queue"]),
            GaugeMetricFamily("flower_ops_queue_consumers", "Consumers of the queue",
                              labels=["queue"]),
            GaugeMetricFamily("flower_ops_queue_oldest_message_age_seconds",
                              "Age of the oldest waiting message", labels=["queue"]),
            GaugeMetricFamily("flower_ops_worker_memory_bytes",
                              "Worker memory: current RSS of the worker and its pool "
                              "(kind=rss) or Celery's max RSS (kind=max_rss)",
                              labels=["worker", "kind"]),
            CounterMetricFamily("flower_ops_tasks_finished",
                                "Tasks that reached SUCCESS or FAILURE since the monitor "
                                "started", labels=["state"]),
        )

    def _fill(self, health: HealthMonitor, alerts: GaugeMetricFamily,
              messages: GaugeMetricFamily, unacked: GaugeMetricFamily,
              consumers: GaugeMetricFamily, oldest: GaugeMetricFamily,
              memory: GaugeMetricFamily, finished: CounterMetricFamily) -> None:
        counts = health.book.counts()
        for kind in KINDS:
            for severity in SEVERITIES:
                alerts.add_metric([kind, severity], counts.get((kind, severity), 0))
        snapshot = health.queues.snapshot
        if snapshot is not None:
            for name, depth in sorted(snapshot.queues.items()):
                messages.add_metric([name], depth.messages)
                if depth.unacked is not None:
                    unacked.add_metric([name], depth.unacked)
                count = health.queues.consumers_of(name)
                if count is not None:
                    consumers.add_metric([name], count)
                if depth.oldest_message_age_seconds is not None:
                    oldest.add_metric([name], depth.oldest_message_age_seconds)
        for worker in health.workers.list()["workers"]:
            info = worker.get("memory") or {}
            if info.get("rss_bytes") is not None:
                memory.add_metric([worker["hostname"], info.get("kind") or "rss"],
                                  info["rss_bytes"])
        for state, count in health.throughput.finished.items():
            finished.add_metric([state], count)


def install_collector(health: HealthMonitor) -> HealthCollector:
    # Flower's /metrics serves prometheus_client's process-wide registry, so
    # the collector is registered there once per process, then re-pointed.
    global _collector  # noqa: PLW0603
    with _lock:
        if _collector is None:
            _collector = HealthCollector()
            REGISTRY.register(_collector)
        _collector.attach(health)
        return _collector
