"""``GET /alerts``: active alerts, the recently resolved ones, thresholds."""
from __future__ import annotations

from typing import Any

from ..handlers.base import ApiHandler
from ..openapi import errors, ok

ALERT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "subject", "severity", "since", "message"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["stuck_task", "orphaned_task", "queue_backlog",
                                            "worker_offline", "worker_saturated"]},
        "subject": {"type": "string",
                    "description": "task id, worker hostname or queue name"},
        "severity": {"type": "string", "enum": ["warning", "critical"]},
        "since": {"type": "number", "description": "when the condition began (epoch s)"},
        "message": {"type": "string"},
        "raised_at": {"type": "number"},
        "resolved_at": {"type": "number", "nullable": True},
        "status": {"type": "string", "enum": ["active", "resolved"]},
        "details": {"type": "object"},
    },
}


class AlertsHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(self.ops.health.summary())  # type: ignore[attr-defined]


def openapi_operations() -> dict[str, Any]:
    return {"get": {
        "summary": "Active and recently resolved alerts", "operationId": "listAlerts",
        "responses": {**ok({"type": "object", "required": ["alerts", "resolved"], "properties": {
            "alerts": {"type": "array", "items": ALERT_SCHEMA},
            "resolved": {"type": "array", "items": ALERT_SCHEMA},
            "thresholds": {"type": "object"},
            "webhook": {"type": "object", "nullable": True},
            "worker_probe_error": {"type": "string", "nullable": True}}}),
            **errors(401, 403)}}}
