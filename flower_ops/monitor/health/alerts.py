"""Alerts: raised and resolved from what the rules find, never duplicated.

An alert is identified by ``(kind, subject)`` — e.g. ``("stuck_task", task
id)``. Two ways in:

* ``update(findings, kinds=...)`` for the few conditions re-checked on every
  evaluation (workers, queues): a finding with no active alert raises one, an
  active alert of a checked kind with no finding is resolved, a finding that
  persists updates the alert in place (only when something changed; severity
  changes are announced as ``updated``).
* ``raise_alert(finding, now)`` / ``resolve(key, now)`` for conditions the
  rules see begin and end (stuck and orphaned tasks): each costs O(log n),
  whatever the number of active alerts.

Active alerts are kept in display order (most severe, then oldest) as they
change, so the top of the list and the counts never need a sort or a scan.

Every change is published on the ``AlertBus`` (``bus.py``) as
``(event, alert_dict)`` with event ``"raised"``, ``"updated"`` or
``"resolved"``, on the IOLoop thread.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sortedcontainers import SortedList

from flower_ops.core.times import iso_utc, with_times
from flower_ops.monitor.health.bus import AlertBus

logger = logging.getLogger(__name__)

STUCK_TASK = "stuck_task"
ORPHANED_TASK = "orphaned_task"
QUEUE_BACKLOG = "queue_backlog"
WORKER_OFFLINE = "worker_offline"
WORKER_SATURATED = "worker_saturated"
# another monitor of the group signs tokens with another key (monitor/instances.py)
MONITOR_KEY_MISMATCH = "monitor_key_mismatch"
KINDS = (STUCK_TASK, ORPHANED_TASK, QUEUE_BACKLOG, WORKER_OFFLINE, WORKER_SATURATED,
         MONITOR_KEY_MISMATCH)

WARNING = "warning"
CRITICAL = "critical"
SEVERITIES = (WARNING, CRITICAL)

AlertKey = tuple[str, str]

# Instants among the rules' details (epoch seconds inside, ISO 8601 out);
# every ``*_seconds`` detail is a duration, rounded to the millisecond
DETAIL_INSTANTS = ("started", "last_heartbeat")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


@dataclass(frozen=True)
class Elapsed:
    """A message that says how long something has lasted (``head`` + duration
    since ``since`` + ``tail``), rendered when the alert is read instead of
    being rebuilt on every evaluation. ``detail`` names a details key that
    carries the same elapsed time in seconds."""

    since: float
    head: str
    tail: str
    detail: str | None = None

    def message(self, now: float) -> str:
        return f"{self.head}{duration(now - self.since)}{self.tail}"


@dataclass(frozen=True)
class Finding:
    """One condition a rule found true now."""

    kind: str
    subject: str
    severity: str
    since: float          # when the condition began (epoch seconds)
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    elapsed: Elapsed | None = None

    @property
    def key(self) -> AlertKey:
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
    elapsed: Elapsed | None = None

    @property
    def key(self) -> AlertKey:
        return (self.kind, self.subject)

    @property
    def order(self) -> tuple[int, float, str, str]:
        """Display order: most severe first, then oldest."""
        return (-_rank(self.severity), self.since, self.kind, self.subject)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        message = self.message
        details = dict(self.details)
        if self.elapsed is not None:
            at = self.resolved_at if self.resolved_at is not None else (
                time.time() if now is None else now)
            message = self.elapsed.message(at)
            if self.elapsed.detail is not None:
                details[self.elapsed.detail] = at - self.elapsed.since
        return {
            "id": self.id, "kind": self.kind, "subject": self.subject,
            "severity": self.severity, "since": iso_utc(self.since), "message": message,
            "raised_at": iso_utc(self.raised_at), "resolved_at": iso_utc(self.resolved_at),
            "status": "resolved" if self.resolved_at is not None else "active",
            "details": with_times(details, instants=DETAIL_INSTANTS,
                                  durations=[k for k in details if k.endswith("_seconds")]),
        }


class AlertLog:
    """The alert lines in the process log, with a budget: at most
    ``per_window`` lines per ``window_seconds``. A burst (thousands of stuck
    tasks found at once) is counted instead and summed up in one line when
    its window ends; ``GET /alerts`` has every alert."""

    def __init__(self, *, per_window: int = 20, window_seconds: float = 60.0) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self._window_start: float | None = None
        self._logged = 0
        self._held = {"raised": 0, "resolved": 0}

    def line(self, now: float, event: str, level: int, message: str, *args: Any) -> None:
        self.flush(now)
        if self._window_start is None:
            self._window_start = now
        if self._logged < self.per_window:
            self._logged += 1
            logger.log(level, message, *args)
        else:
            self._held[event] += 1

    def flush(self, now: float) -> None:
        """End the window if its time is up, summing up what was held back."""
        start = self._window_start
        if start is None or now - start < self.window_seconds:
            return
        raised, resolved = self._held["raised"], self._held["resolved"]
        if raised or resolved:
            logger.warning("%d more alerts raised and %d resolved in the last %.0fs "
                           "(not logged one by one; GET /alerts lists them)",
                           raised, resolved, now - start)
        self._window_start, self._logged = None, 0
        self._held = {"raised": 0, "resolved": 0}


class AlertBook:
    """Active alerts and the recently resolved ones. IOLoop thread only."""

    def __init__(self, *, bus: AlertBus | None = None, resolved_history: int = 200) -> None:
        self.log = AlertLog()
        self.active: dict[AlertKey, Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=resolved_history)
        self.bus = bus if bus is not None else AlertBus()
        self._ids = itertools.count(1)
        self.raised_total = 0
        # Bumped on every change to the active alerts (raise, update, resolve)
        self.version = 0
        # Active alerts' ``order`` keys, all and per kind, kept sorted
        self._ordered: SortedList = SortedList()
        self._ordered_by_kind: dict[str, SortedList] = {kind: SortedList() for kind in KINDS}
        self._counts: dict[tuple[str, str], int] = {}

    # -- changes -----------------------------------------------------------------------

    def update(self, findings: Iterable[Finding], *, kinds: Iterable[str], now: float) -> None:
        """Apply one evaluation of ``kinds``: raise, update and resolve."""
        found: dict[AlertKey, Finding] = {}
        for finding in findings:
            # One finding per key: the most severe wins
            current = found.get(finding.key)
            if current is None or _rank(finding.severity) > _rank(current.severity):
                found[finding.key] = finding
        for kind in set(kinds):
            ordered = self._ordered_by_kind.get(kind)
            if not ordered:
                continue
            gone = [(kind, subject) for _, _, _, subject in ordered
                    if (kind, subject) not in found]
            for key in gone:
                self.resolve(key, now)
        for finding in found.values():
            self.raise_alert(finding, now, refresh=True)
        self.log.flush(now)

    def raise_alert(self, finding: Finding, now: float, *, refresh: bool = False) -> bool:
        """Raise an alert for ``finding`` unless one is active for its key (then
        a severity change is applied, and with ``refresh`` the message and
        details too). True when a new alert was raised."""
        existing = self.active.get(finding.key)
        if existing is None:
            self._raise(finding, now)
            return True
        if existing.severity == finding.severity and (not refresh or (
                existing.message == finding.message and existing.details == finding.details
                and existing.elapsed == finding.elapsed)):
            return False
        if refresh:
            updated = replace(existing, severity=finding.severity, message=finding.message,
                              details=dict(finding.details), elapsed=finding.elapsed)
        else:
            updated = replace(existing, severity=finding.severity)
        if updated.severity == existing.severity:
            self.active[updated.key] = updated  # same place in the order
            self.version += 1
            return False
        self._unindex(existing)
        self._index(updated)
        self._notify("updated", updated, now)
        return False

    def resolve(self, key: AlertKey, now: float) -> bool:
        """Resolve the active alert for ``key``, if there is one."""
        alert = self.active.get(key)
        if alert is None:
            return False
        self._unindex(alert)
        alert = replace(alert, resolved_at=now)
        self.resolved.append(alert)
        self.log.line(now, "resolved", logging.INFO, "alert resolved: %s", alert.message)
        self._notify("resolved", alert, now)
        return True

    def resolve_where(self, predicate: Callable[[Alert], bool], now: float) -> None:
        for key, alert in list(self.active.items()):
            if predicate(alert):
                self.resolve(key, now)

    def _raise(self, finding: Finding, now: float) -> None:
        alert = Alert(id=f"{finding.kind}:{finding.subject}:{next(self._ids)}",
                      kind=finding.kind, subject=finding.subject, severity=finding.severity,
                      since=finding.since, message=finding.message, raised_at=now,
                      details=dict(finding.details), elapsed=finding.elapsed)
        self._index(alert)
        self.raised_total += 1
        self.log.line(now, "raised", logging.WARNING, "alert raised: [%s] %s",
                      alert.severity, alert.message)
        self._notify("raised", alert, now)

    def _index(self, alert: Alert) -> None:
        self.active[alert.key] = alert
        order = alert.order
        self._ordered.add(order)
        self._ordered_by_kind.setdefault(alert.kind, SortedList()).add(order)
        count_key = (alert.kind, alert.severity)
        self._counts[count_key] = self._counts.get(count_key, 0) + 1
        self.version += 1

    def _unindex(self, alert: Alert) -> None:
        del self.active[alert.key]
        order = alert.order
        self._ordered.remove(order)
        self._ordered_by_kind[alert.kind].remove(order)
        count_key = (alert.kind, alert.severity)
        left = self._counts[count_key] - 1
        if left:
            self._counts[count_key] = left
        else:
            del self._counts[count_key]
        self.version += 1

    def _notify(self, event: str, alert: Alert, now: float) -> None:
        if not self.bus.idle:
            self.bus.publish(event, alert.as_dict(now))

    # -- reads -------------------------------------------------------------------------

    def active_list(self, limit: int | None = None, *,
                    kind: str | None = None) -> list[dict[str, Any]]:
        """Active alerts, most severe first, then oldest: the first ``limit``."""
        ordered = self._ordered if kind is None else self._ordered_by_kind.get(kind, ())
        now = time.time()
        active = self.active
        return [active[(k, subject)].as_dict(now)
                for _, _, k, subject in itertools.islice(ordered, limit)]

    def active_count(self, kind: str | None = None) -> int:
        if kind is None:
            return len(self.active)
        return len(self._ordered_by_kind.get(kind, ()))

    def resolved_list(self, limit: int = 50, *, kind: str | None = None) -> list[dict[str, Any]]:
        alerts = [a for a in self.resolved if kind is None or a.kind == kind]
        return [a.as_dict() for a in reversed(alerts[-limit:])]

    def counts(self) -> dict[tuple[str, str], int]:
        """Active alerts per ``(kind, severity)``."""
        return dict(self._counts)

    def counts_by(self) -> dict[str, dict[str, int]]:
        """Active alerts per kind and per severity, every one listed (0 when none)."""
        by_kind = dict.fromkeys(KINDS, 0)
        by_severity = dict.fromkeys(SEVERITIES, 0)
        for (kind, severity), count in self._counts.items():
            by_kind[kind] = by_kind.get(kind, 0) + count
            by_severity[severity] = by_severity.get(severity, 0) + count
        return {"by_kind": by_kind, "by_severity": by_severity}


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1
