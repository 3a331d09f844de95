"""The running monitors (``automation.monitors``, migrations/0006): each one
registers itself, beats every few seconds, and reads the others of its group.

Liveness is judged by the database's clock (``now()``), so the monitors'
clocks need not agree. Blocking: call through the monitor's executor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flower_ops.db.pool import Database
from flower_ops.db.schema import MONITORS


@dataclass(frozen=True)
class MonitorEntry:
    """One running monitor, as the others see it (never its key: a fingerprint)."""

    instance_id: str
    group: str
    host: str
    pid: int
    port: int | None
    version: str
    key_fingerprint: str
    started_at: float = 0.0
    heartbeat_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"instance": self.instance_id, "group": self.group, "host": self.host,
                "pid": self.pid, "port": self.port, "version": self.version,
                "key_fingerprint": self.key_fingerprint, "started_at": self.started_at,
                "heartbeat_at": self.heartbeat_at}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> MonitorEntry:
        return cls(instance_id=str(value["instance"]), group=str(value["group"]),
                   host=str(value["host"]), pid=int(value["pid"]),
                   port=int(value["port"]) if value.get("port") is not None else None,
                   version=str(value.get("version") or ""),
                   key_fingerprint=str(value["key_fingerprint"]),
                   started_at=float(value.get("started_at") or 0.0),
                   heartbeat_at=float(value.get("heartbeat_at") or 0.0))


_BEAT_SQL = f"""
INSERT INTO {MONITORS} (instance_id, monitor_group, host, pid, port, version,
                        key_fingerprint, started_at, heartbeat_at)
VALUES (%(instance_id)s, %(group)s, %(host)s, %(pid)s, %(port)s, %(version)s,
        %(key_fingerprint)s, now(), now())
ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(),
    key_fingerprint = EXCLUDED.key_fingerprint, port = EXCLUDED.port
"""

_PEERS_SQL = f"""
SELECT instance_id, monitor_group, host, pid, port, version, key_fingerprint,
       extract(epoch FROM started_at), extract(epoch FROM heartbeat_at)
FROM {MONITORS}
WHERE monitor_group = %(group)s AND instance_id <> %(instance_id)s
  AND heartbeat_at > now() - make_interval(secs => %(stale)s)
ORDER BY started_at
"""


class PgMonitorRegistry:
    def __init__(self, database: Database) -> None:
        self._db = database

    def beat(self, entry: MonitorEntry) -> None:
        """Register ``entry``, or tell that it is still alive."""
        with self._db.connection() as conn:
            conn.execute(_BEAT_SQL, {
                "instance_id": entry.instance_id, "group": entry.group, "host": entry.host,
                "pid": entry.pid, "port": entry.port, "version": entry.version,
                "key_fingerprint": entry.key_fingerprint})

    def peers(self, entry: MonitorEntry, stale_seconds: float) -> list[MonitorEntry]:
        """The other monitors of ``entry``'s group that beat within ``stale_seconds``."""
        with self._db.connection() as conn:
            rows = conn.execute(_PEERS_SQL, {"group": entry.group,
                                             "instance_id": entry.instance_id,
                                             "stale": float(stale_seconds)}).fetchall()
        return [MonitorEntry(instance_id=r[0], group=r[1], host=r[2], pid=int(r[3]),
                             port=r[4], version=r[5] or "", key_fingerprint=r[6],
                             started_at=float(r[7]), heartbeat_at=float(r[8])) for r in rows]

    def remove(self, instance_ids: list[str], *, older_than_seconds: float | None = None
               ) -> None:
        """Deregister ``instance_ids``; and, with ``older_than_seconds``, every
        registration that has not beaten for that long (long gone)."""
        with self._db.connection() as conn:
            if instance_ids:
                conn.execute(f"DELETE FROM {MONITORS} WHERE instance_id = ANY(%s)",
                             (instance_ids,))
            if older_than_seconds is not None:
                conn.execute(f"DELETE FROM {MONITORS} WHERE heartbeat_at < now() - "
                             "make_interval(secs => %s)", (float(older_than_seconds),))
