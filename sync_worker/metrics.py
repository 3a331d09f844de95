"""Prometheus metrics of the sync worker, served on their own port.

A private registry (not the global one), so several sync workers can live in
one process (tests, the demo) without clashing.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("flower_ops_sync_events_total",
                              "Celery task events received", registry=r)
        self.dropped = Counter("flower_ops_sync_events_dropped_total",
                               "Events dropped because the buffer was full (reconciliation "
                               "closes the gap)", registry=r)
        self.batch_size = Histogram("flower_ops_sync_batch_events",
                                    "Events per committed batch",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("flower_ops_sync_batch_duration_seconds",
                                       "Time to commit one batch", buckets=_SECONDS_BUCKETS,
                                       registry=r)
        self.rows_changed = Counter("flower_ops_sync_rows_changed_total",
                                    "Rows inserted or changed by event batches", registry=r)
        self.lag = Gauge("flower_ops_sync_lag_seconds",
                         "Event time to commit time of the newest committed event", registry=r)
        self.buffered = Gauge("flower_ops_sync_buffered_events",
                              "Events received and not yet committed", registry=r)
        self.reconnects = Counter("flower_ops_sync_reconnects_total",
                                  "Reconnections after a lost connection", ["target"],
                                  registry=r)
        self.reconciled = Counter("flower_ops_sync_reconciled_rows_total",
                                  "Rows changed by reconciliation", registry=r)
        self.discovered = Counter("flower_ops_sync_discovered_rows_total",
                                  "Rows created for tasks no event was seen for", ["source"],
                                  registry=r)
        self.reconcile_runs = Counter("flower_ops_sync_reconcile_runs_total",
                                      "Reconciliation passes", registry=r)
        self.purged = Counter("flower_ops_sync_retention_rows_total",
                              "Rows deleted or archived by retention", registry=r)
        self.stream_read = Counter("flower_ops_sync_stream_entries_read_total",
                                   "Capture stream entries read (each holds one or more "
                                   "events)", registry=r)
        self.stream_acked = Counter("flower_ops_sync_stream_entries_acked_total",
                                    "Capture stream entries acknowledged after their commit",
                                    registry=r)
        self.stream_claimed = Counter("flower_ops_sync_stream_entries_claimed_total",
                                      "Entries claimed from consumers that did not acknowledge "
                                      "them in time", registry=r)
        self.stream_pending = Gauge("flower_ops_sync_stream_pending_entries",
                                    "Entries delivered to the group and not yet acknowledged "
                                    "(set by the leader)", registry=r)
        self.stream_lag = Gauge("flower_ops_sync_stream_lag_entries",
                                "Entries not yet delivered to the group (set by the leader)",
                                registry=r)
        self.stream_length = Gauge("flower_ops_sync_stream_length_entries",
                                   "Entries in the capture stream (set by the leader)",
                                   registry=r)
        self.captured_skipped = Counter("flower_ops_sync_pubsub_captured_skipped_total",
                                        "Pub/sub task events skipped because the capture "
                                        "stream delivers them", registry=r)
        self.leader = Gauge("flower_ops_sync_leader",
                            "1 while this replica holds the leader lock", registry=r)
        self.role = Gauge("flower_ops_sync_role",
                          "This replica's role: 1 for the one it has (leader or standby)",
                          ["role"], registry=r)
        self.set_leader(False)

    def set_leader(self, leading: bool) -> None:
        """The replica's role, as ``flower_ops_sync_leader`` and ``flower_ops_sync_role``."""
        self.leader.set(1 if leading else 0)
        self.role.labels(role="leader").set(1 if leading else 0)
        self.role.labels(role="standby").set(0 if leading else 1)

    def serve(self, *, port: int, address: str = "0.0.0.0") -> None:
        if port:
            start_http_server(port, addr=address, registry=self.registry)
