"""``GET /alerts``: active alerts, the recently resolved ones, thresholds."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.monitor.auth import RequestAuth
from flower_ops.monitor.health.alerts import KINDS
from flower_ops.monitor.health.monitor import HealthMonitor
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart
from flower_ops.monitor.http.openapi import errors, ok
from flower_ops.monitor.http.params import parse_int
from flower_ops.monitor.http.schemas import ref

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000


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
        "responses": {**ok(ref("AlertList")), **errors(400, 401, 403)}}}


def part(*, auth: RequestAuth, health: HealthMonitor) -> HttpPart:
    return HttpPart(routes=[(f"{API_BASE}/alerts/?", AlertsHandler,
                             {"auth": auth, "health": health})],
                    openapi_paths={"/alerts": openapi_operations()})
