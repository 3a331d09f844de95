"""Which monitor tells the alert webhook (``automation.alert_deliveries``,
migrations/0007): each change of an alert's state (raised, resolved) is
delivered by the one monitor of the group whose write makes that change.

Blocking: call through the monitor's executor.
"""
from __future__ import annotations

from flower_ops.db.pool import Database
from flower_ops.db.schema import ALERT_DELIVERIES

# resolved alerts' rows are forgotten after this long
KEEP_RESOLVED = "7 days"
_PRUNE_EVERY = 500

_CLAIM_SQL = f"""
INSERT INTO {ALERT_DELIVERIES} AS d (monitor_group, kind, subject, last_event, instance_id)
VALUES (%(group)s, %(kind)s, %(subject)s, %(event)s, %(instance)s)
ON CONFLICT (monitor_group, kind, subject) DO UPDATE
    SET last_event = EXCLUDED.last_event, instance_id = EXCLUDED.instance_id, changed_at = now()
    WHERE d.last_event <> EXCLUDED.last_event
RETURNING 1
"""

_PRUNE_SQL = (f"DELETE FROM {ALERT_DELIVERIES} WHERE last_event = 'resolved' "
              f"AND changed_at < now() - interval '{KEEP_RESOLVED}'")


class PgDeliveryLedger:
    def __init__(self, database: Database, *, group: str, instance_id: str) -> None:
        self._db = database
        self._group = group
        self._instance = instance_id
        self._claims = 0

    def claim(self, event: str, kind: str, subject: str) -> bool:
        """Whether this monitor moves ``(kind, subject)`` to ``event`` (and so
        delivers it); False when another monitor already did."""
        self._claims += 1
        with self._db.connection() as conn:
            if self._claims % _PRUNE_EVERY == 0:
                conn.execute(_PRUNE_SQL)
            row = conn.execute(_CLAIM_SQL, {
                "group": self._group, "kind": kind, "subject": subject, "event": event,
                "instance": self._instance}).fetchone()
        return row is not None
