"""The settings the harness runs the product with, documented in one place.

The product's defaults suit production; tests and suites that wait for a
refresh or a flush use these shorter intervals instead.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FAST_MONITOR_REFRESH: Mapping[str, str] = MappingProxyType({
    # workers' inspect replies every 2 s, queue depths every 0.5 s
    "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "2",
    "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
})
"""Monitor environment: inspect and queue data refreshed often enough for a test to wait on."""

FAST_SYNC_WORKER: Mapping[str, str] = MappingProxyType({
    "FLOWER_OPS_SYNC_METRICS_PORT": "0",     # no metrics endpoint: replicas run side by side
    "FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.1",
    "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "2",
    "FLOWER_OPS_SYNC_RECONCILE_SETTLE_SECONDS": "0.5",
    "FLOWER_OPS_SYNC_LEADER_POLL_SECONDS": "0.3",
    "FLOWER_OPS_SYNC_BACKOFF_INITIAL_SECONDS": "0.2",
    "FLOWER_OPS_SYNC_BACKOFF_MAX_SECONDS": "2",
})
"""Sync worker environment: quick flushes, reconcile passes, leader polls and reconnects."""
