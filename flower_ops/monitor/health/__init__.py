"""Health: stuck and orphaned tasks, queue backlogs, offline and saturated
workers, as alerts in ``/stats``, ``/alerts``, the live feed, Prometheus and
an optional webhook (SPEC §9).

``HealthMonitor`` (``monitor.py``) runs the rules (``rules.py``,
``task_alerts.py``) into an ``AlertBook`` (``alerts.py``), which publishes
every change on the ``AlertBus`` (``bus.py``); ``probe.py`` asks instrumented
workers for their memory, ``webhook.py`` posts alerts out, ``metrics.py``
exports them to Prometheus. The composition root (``monitor/app.py``) builds
and wires them.
"""
