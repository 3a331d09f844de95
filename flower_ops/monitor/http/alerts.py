"""``GET /alerts``: active alerts, the recently resolved ones, thresholds."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.monitor.auth import RequestAuth
from flower_ops.monitor.health.alerts import KINDS, SEVERITIES
from flower_ops.monitor.health.monitor import HealthMonitor
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart
from flower_ops.monitor.http.openapi import errors, ok
from flower_ops.monitor.http.params import parse_int

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000

ALERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "subject", "severity", "since", "message"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": list(KINDS)},
        "subject": {"type": "string",
                    "description": "task id, worker hostname or queue name"},
        "severity": {"type": "string", "enum": list(SEVERITIES)},
        "since": {"type": "number", "description": "when the condition began (epoch s)"},
        "message": {"type": "string"},
        "raised_at": {"type": "number"},
        "resolved_at": {"type": "number", "nullable": True},
        "status": {"type": "string", "enum": ["active", "resolved"]},
        "details": {"type": "object"},
    },
}

# Active alerts per kind and per severity, every one listed (0 when none)
ALERT_COUNTS_SCHEMA: dict[str, Any] = {
    "alerts_total": {"type": "integer", "description": "active alerts (of `kind`, if given)"},
    "alerts_by_kind": {"type": "object", "additionalProperties": {"type": "integer"}},
    "alerts_by_severity": {"type": "object", "additionalProperties": {"type": "integer"}},
}


def parse_alert_query(get: Callable[[str], str | None]) -> tuple[int, str | None]:
    """``limit`` (1..5000, default 500) and ``kind`` (one of the alert kinds)."""
    limit = parse_int(get("limit"), "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    kind = get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidQuery("unknown alert kind", {"parameter": "kind", "allowed": list(KINDS)})
    return limit, kind


class AlertsHandler(ApiHandler):
    query_parameters = frozenset({"limit", "kind"})
    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   health: HealthMonitor) -> None:
        super().initialize(auth=auth)
        self.health = health

    def get(self) -> None:
        limit, kind = parse_alert_query(self.query)
        self.write_json(self.health.summary(limit=limit, kind=kind))


def openapi_operations() -> dict[str, Any]:
    return {"get": {
        "summary": "Active and recently resolved alerts", "operationId": "listAlerts",
        "parameters": [
            {"name": "limit", "in": "query",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT},
             "description": "at most this many active alerts, most severe then oldest first"},
            {"name": "kind", "in": "query", "schema": {"type": "string", "enum": list(KINDS)},
             "description": "only alerts of this kind (active and resolved)"},
        ],
        "responses": {**ok({"type": "object", "required": ["alerts", "resolved"], "properties": {
            "alerts": {"type": "array", "items": ALERT_SCHEMA,
                       "description": "active alerts, most severe first, then oldest"},
            **ALERT_COUNTS_SCHEMA,
            "resolved": {"type": "array", "items": ALERT_SCHEMA,
                         "description": "the last 50 resolved, newest first"},
            "thresholds": {"type": "object"},
            "webhook": {"type": "object", "nullable": True},
            "worker_probe_error": {"type": "string", "nullable": True}}}),
            **errors(400, 401, 403)}}}


def part(*, auth: RequestAuth, health: HealthMonitor) -> HttpPart:
    return HttpPart(routes=[(f"{API_BASE}/alerts/?", AlertsHandler,
                             {"auth": auth, "health": health})],
                    openapi_paths={"/alerts": openapi_operations()})
