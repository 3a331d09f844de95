"""Health: stuck and orphaned tasks, queue backlogs, offline and saturated
workers, as alerts in ``/stats``, ``/alerts``, the live feed, Prometheus and
an optional webhook (SPEC §9).

``extend(ops)`` (called by ``install()``) sets:

* ``ops.health`` — the ``HealthMonitor``;
* ``ops.alert_provider`` — the alerts ``/stats`` shows: the most severe
  active ones (``alerts``), ``alerts_total`` and counts by kind and severity;
* ``ops.alert_listeners`` — a list of callables ``listener(event, alert)``
  called on the IOLoop thread with ``event`` in ``raised``/``updated``/
  ``resolved`` and the alert as a JSON-ready dict. Subscribe with
  ``vars(ops).setdefault("alert_listeners", []).append(listener)``: that
  works whichever extension runs first (this one adopts an existing list).

This package's ``__init__`` stays import-light: workers import
``health.worker_command`` through ``instrument()``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flower_ops.monitor.app import FlowerOps


def extend(ops: FlowerOps) -> None:
    from flower_ops.monitor.http import openapi
    from flower_ops.monitor.app import API_BASE
    from flower_ops.monitor.sources.rabbitmq import RabbitQueueSource
    from flower_ops.monitor.http.alerts import AlertsHandler, openapi_operations
    from flower_ops.monitor.health.metrics import install_collector
    from flower_ops.monitor.health.monitor import HealthMonitor

    source = ops.queues.source
    broker_api = getattr(ops.flower.options, "broker_api", None)
    if isinstance(source, RabbitQueueSource) and broker_api:
        # Flower's --broker_api names the management API; honour it
        ops.queues.source = RabbitQueueSource(
            broker_url=source.broker_url, broker_api=broker_api,
            use_ssl=ops.flower.capp.conf.broker_use_ssl)
    health = HealthMonitor(ops)
    ops.health = health  # type: ignore[attr-defined]
    ops.alert_provider = health.stats_alerts
    # Adopt a list another extension may already have subscribed to
    shared = vars(ops).setdefault("alert_listeners", [])
    shared.extend(listener for listener in health.book.listeners if listener not in shared)
    health.book.listeners = shared
    ops.index.observers.append(health.started.observe)
    state = ops.index.state
    ops.index.change_listeners.append(
        lambda changed: health.started.forget_missing(changed, state.tasks.data))
    ops.on_start.append(health.start)
    ops.on_stop.append(health.stop)
    ops.extra_routes.append((f"{API_BASE}/alerts/?", AlertsHandler))
    openapi.add_path("/alerts", openapi_operations())
    install_collector(health)
