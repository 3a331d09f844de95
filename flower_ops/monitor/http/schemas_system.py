"""Component schemas of the system answers: stats, workers, queues, alerts
(conventions in ``schemas.py``)."""
from __future__ import annotations

from dataclasses import fields

from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.monitor.config import AlertThresholds
from flower_ops.monitor.health.alerts import KINDS, SEVERITIES
from flower_ops.monitor.http.schemas import (
    BOOLEAN,
    COUNT,
    DURATION,
    INSTANT,
    INTEGER,
    N_COUNT,
    N_DURATION,
    N_INSTANT,
    N_INTEGER,
    N_NUMBER,
    N_STRING,
    NUMBER,
    STRING,
    STRINGS,
    Schema,
    closed,
    mapping,
    nullable,
    ref,
    with_description,
)

WINDOWS = ("1m", "5m", "15m")

# -- alerts -----------------------------------------------------------------------------

ALERT_DETAILS = closed({
    "worker": N_STRING, "last_heartbeat": N_INSTANT, "active": N_COUNT,
    "max_concurrency": N_COUNT, "reserved": N_COUNT,
    "queue": STRING, "messages": N_COUNT, "consumers": N_COUNT, "growth": N_INTEGER,
    "oldest_message_age_seconds": N_DURATION, "threshold_messages": COUNT,
    "reason": {"type": "string", "enum": ["no_consumer", "threshold", "runtime"]},
    "task_id": STRING, "task_name": N_STRING, "started": N_INSTANT,
    "running_seconds": N_DURATION, "threshold_seconds": N_DURATION,
    "usual_p95_seconds": N_DURATION, "samples": COUNT, "limit_seconds": N_DURATION,
    "instance": STRING, "host": STRING, "port": N_COUNT, "pid": COUNT, "setting": STRING,
}, required=[], description="What the rule saw; the keys depend on the kind")

ALERT = closed({
    "id": STRING,
    "kind": {"type": "string", "enum": list(KINDS)},
    "subject": with_description(STRING, "task id, worker hostname, queue name or "
                                        "another monitor's instance id"),
    "severity": {"type": "string", "enum": list(SEVERITIES)},
    "since": with_description(INSTANT, "when the condition began"),
    "message": STRING,
    "raised_at": INSTANT,
    "resolved_at": N_INSTANT,
    "status": {"type": "string", "enum": ["active", "resolved"]},
    "details": ref("AlertDetails"),
})

# Active alerts per kind and per severity, every one listed (0 when none)
ALERT_COUNTS: dict[str, Schema] = {
    "alerts_total": with_description(COUNT, "active alerts (of `kind`, if given)"),
    "alerts_by_kind": closed(dict.fromkeys(KINDS, COUNT)),
    "alerts_by_severity": closed(dict.fromkeys(SEVERITIES, COUNT)),
}


def _threshold(name: str, kind: object) -> Schema:
    if kind in (int, "int"):
        return COUNT
    return DURATION if name.endswith("_seconds") else {"type": "number", "minimum": 0}


ALERT_LIST = closed({
    "alerts": {"type": "array", "items": ref("Alert"),
               "description": "active alerts, most severe first, then oldest"},
    **ALERT_COUNTS,
    "resolved": {"type": "array", "items": ref("Alert"),
                 "description": "the last 50 resolved, newest first"},
    "thresholds": closed({f.name: _threshold(f.name, f.type)
                          for f in fields(AlertThresholds)}),
    "webhook": nullable(closed({"delivered": COUNT, "dropped": COUNT,
                                "failed_attempts": COUNT, "left_to_peers": COUNT})),
    "worker_probe_error": N_STRING,
}, description="GET /alerts")

# -- stats ------------------------------------------------------------------------------

_PER_WINDOW_RATE = closed({w: {"type": "number", "minimum": 0} for w in WINDOWS})

STATS = closed({
    "tasks": closed({
        "total": COUNT,
        "by_state": {"type": "object", "required": list(TASK_STATES),
                     "properties": dict.fromkeys(TASK_STATES, COUNT),
                     "additionalProperties": COUNT,
                     "description": "every state, 0 when none (and any other state "
                                    "Flower reports)"}}),
    "throughput": with_description(_PER_WINDOW_RATE, "tasks finished per minute"),
    "success_rate": with_description(nullable({"type": "number", "minimum": 0, "maximum": 1}),
                                     "of tasks finished in the last 15 minutes"),
    "success_rate_by_window": closed(
        {w: nullable({"type": "number", "minimum": 0, "maximum": 1}) for w in WINDOWS}),
    "completed_15m": closed({"success": COUNT, "failure": COUNT}),
    "runtime": mapping(closed({"count": COUNT, "p50": DURATION, "p95": DURATION,
                               "p99": DURATION}),
                       "runtime percentiles of recent runs, by task name"),
    "workers": closed({"online": COUNT, "offline": COUNT, "total": COUNT}),
    "queues": closed({"messages": N_COUNT, "unacked": N_COUNT, "queues": COUNT},
                     description="totals over the watched queues"),
    "alerts": {"type": "array", "items": ref("Alert"),
               "description": "the 100 most severe active alerts, oldest first"},
    **ALERT_COUNTS,
    "capabilities": closed({"sent_events": BOOLEAN, "exact_args": BOOLEAN,
                            "instrumented_workers": BOOLEAN, "history": BOOLEAN,
                            "missing": with_description(STRINGS, "what the app's "
                                                        "instrumentation does not give")}),
    "generated_at": INSTANT,
}, description="GET /stats")

# -- workers ----------------------------------------------------------------------------

_PROCESS_MEMORY = closed({"pid": INTEGER, "role": {"type": "string", "enum": ["main", "pool"]},
                          "rss_bytes": N_COUNT})

WORKER = closed({
    "hostname": STRING,
    "status": {"type": "string", "enum": ["online", "offline"]},
    "active": with_description(N_COUNT, "tasks it runs now"),
    "reserved": N_COUNT, "processed": N_COUNT,
    "loadavg": nullable({"type": "array", "items": NUMBER}),
    "memory": closed({
        "rss_bytes": N_COUNT,
        "kind": {"type": "string", "enum": ["rss", "max_rss"],
                 "description": "rss: current (instrumented workers), max_rss: the peak"},
        "processes": nullable({"type": "array", "items": _PROCESS_MEMORY}),
        "measured_at": N_INSTANT}, required=["rss_bytes", "kind"]),
    "pool": closed({"implementation": N_STRING, "class": N_STRING, "max_concurrency": N_COUNT,
                    "processes": nullable({"type": "array", "items": INTEGER})}),
    "max_concurrency": N_COUNT,
    "queues": STRINGS,
    "last_heartbeat": N_INSTANT, "offline_since": N_INSTANT,
    "heartbeat_age_seconds": N_DURATION,
    "software": nullable(closed({"identity": N_STRING, "version": N_STRING})),
    "inspected_at": N_INSTANT, "inspect_age_seconds": N_DURATION,
})

WORKER_LIST = closed({"workers": {"type": "array", "items": ref("Worker")}},
                     description="GET /workers")

# -- queues -----------------------------------------------------------------------------

QUEUE = closed({
    "name": STRING, "messages": N_COUNT, "unacked": N_COUNT, "consumers": N_COUNT,
    "rate_in": with_description(N_NUMBER, "messages per second"),
    "rate_out": with_description(N_NUMBER, "messages per second"),
    "oldest_message_age_seconds": N_DURATION,
    "by_priority": mapping(COUNT, "ready messages by priority"),
    "revoked": with_description(COUNT, "ready messages whose task is already revoked (a "
                                "worker discards them; Redis: taken out at once, so 0)"),
})

BROKER = closed({
    "transport": STRING, "supported": BOOLEAN,
    "source": with_description(STRING, "redis, rabbitmq-management or amqp-passive-declare"),
    "detail": N_STRING, "unacked_total": N_COUNT, "refreshed_at": INSTANT,
    "age_seconds": DURATION, "error": N_STRING,
}, required=["transport", "supported", "detail"])

QUEUE_LIST = closed({"queues": {"type": "array", "items": ref("Queue")},
                     "broker": ref("Broker")}, description="GET /queues")

SCHEMAS: dict[str, Schema] = {
    "Stats": STATS, "Worker": WORKER, "WorkerList": WORKER_LIST, "Queue": QUEUE,
    "Broker": BROKER, "QueueList": QUEUE_LIST, "Alert": ALERT, "AlertDetails": ALERT_DETAILS,
    "AlertList": ALERT_LIST,
}
