"""Alerts: raised and resolved from what the rules find, never duplicated.

An alert is identified by ``(kind, subject)`` — e.g. ``("stuck_task", task
id)``. Each evaluation hands the book every finding of the kinds it checked;
a finding with no active alert raises one, an active alert with no finding is
resolved. A finding that persists updates the alert in place (message,
details; severity changes are announced as ``updated``).

Listeners (``AlertBook.listeners``, exposed as ``ops.alert_listeners``) are
called on the IOLoop thread as ``listener(event, alert_dict)`` with event
``"raised"``, ``"updated"`` or ``"resolved"``.
"""
from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

logger = logging.getLogger(__name__)

STUCK_TASK = "stuck_task"
ORPHANED_TASK = "orphaned_task"
QUEUE_BACKLOG = "queue_backlog"
WORKER_OFFLINE = "worker_offline"
WORKER_SATURATED = "worker_saturated"
KINDS = (STUCK_TASK, ORPHANED_TASK, QUEUE_BACKLOG, WORKER_OFFLINE, WORKER_SATURATED)

WARNING = "warning"
CRITICAL = "critical"
SEVERITIES = (WARNING, CRITICAL)

AlertListener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Finding:
    """One condition a rule found true now."""

    kind: str
    subject: str
    severity: str
    since: float          # when the condition began (epoch seconds)
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    subject: str
    severity: str
    since: float
    message: str
    raised_at: float
    details: Mapping[str, Any] = field(default_factory=dict)
    resolved_at: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "subject": self.subject,
            "severity": self.severity, "since": self.since, "message": self.message,
            "raised_at": self.raised_at, "resolved_at": self.resolved_at,
            "status": "resolved" if self.resolved_at is not None else "active",
            "details": dict(self.details),
        }


class AlertBook:
    """Active alerts and the recently resolved ones. IOLoop thread only."""

    def __init__(self, *, resolved_history: int = 200) -> None:
        self.active: dict[tuple[str, str], Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=resolved_history)
        self.listeners: list[AlertListener] = []
        self._ids = itertools.count(1)
        self.raised_total = 0

    def update(self, findings: Iterable[Finding], *, kinds: Iterable[str], now: float) -> None:
        """Apply one evaluation of ``kinds``: raise, update and resolve."""
        checked = set(kinds)
        found: dict[tuple[str, str], Finding] = {}
        for finding in findings:
            # One finding per key: the most severe wins
            current = found.get(finding.key)
            if current is None or _rank(finding.severity) > _rank(current.severity):
                found[finding.key] = finding
        for key, alert in list(self.active.items()):
            if alert.kind in checked and key not in found:
                self._resolve(key, now)
        for key, finding in found.items():
            existing = self.active.get(key)
            if existing is None:
                self._raise(finding, now)
                continue
            updated = replace(existing, severity=finding.severity, message=finding.message,
                              details=dict(finding.details))
            self.active[key] = updated
            if updated.severity != existing.severity:
                self._notify("updated", updated)

    def resolve_where(self, predicate: Callable[[Alert], bool], now: float) -> None:
        for key, alert in list(self.active.items()):
            if predicate(alert):
                self._resolve(key, now)

    def _raise(self, finding: Finding, now: float) -> None:
        alert = Alert(id=f"{finding.kind}:{finding.subject}:{next(self._ids)}",
                      kind=finding.kind, subject=finding.subject, severity=finding.severity,
                      since=finding.since, message=finding.message, raised_at=now,
                      details=dict(finding.details))
        self.active[finding.key] = alert
        self.raised_total += 1
        logger.warning("alert raised: [%s] %s", alert.severity, alert.message)
        self._notify("raised", alert)

    def _resolve(self, key: tuple[str, str], now: float) -> None:
        alert = replace(self.active.pop(key), resolved_at=now)
        self.resolved.append(alert)
        logger.info("alert resolved: %s", alert.message)
        self._notify("resolved", alert)

    def _notify(self, event: str, alert: Alert) -> None:
        payload = alert.as_dict()
        for listener in list(self.listeners):
            try:
                listener(event, payload)
            except Exception:
                logger.exception("alert listener %r failed", listener)

    def active_list(self) -> list[dict[str, Any]]:
        alerts = sorted(self.active.values(),
                        key=lambda a: (-_rank(a.severity), a.since, a.kind, a.subject))
        return [a.as_dict() for a in alerts]

    def resolved_list(self, limit: int = 50) -> list[dict[str, Any]]:
        return [a.as_dict() for a in reversed(list(self.resolved)[-limit:])]

    def counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for alert in self.active.values():
            counts[(alert.kind, alert.severity)] = counts.get((alert.kind, alert.severity), 0) + 1
        return counts


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1
