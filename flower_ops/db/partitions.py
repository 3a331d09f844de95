"""Partitions of the history tables (``migrations/0005``): which exist, which
day a new row goes to, and creating them ahead.

``automation.job_executions`` and ``automation.job_execution_history`` are
partitioned by range of ``first_seen_day`` (the UTC day a task was first
seen, fixed when its row is first written; its history rows carry the same
day). A partition holds ``partition_days`` days (``FLOWER_OPS_SYNC_PARTITION_DAYS``)
and is named after its first day (``job_executions_p20261201``); ranges are
aligned on 1970-01-01, so every process computes the same ones. A range that
would overlap an existing partition (the setting changed) is cut to fit.

Every process creates today's partitions and those ``days_ahead`` days ahead
when it starts (``Database.open``), the sync worker's leader again every
maintenance pass: no cron, no extension. A partition is created empty,
standalone, then ATTACHed (a lock that lets reads and writes go on), in a
short transaction with a ``lock_timeout``; two processes doing it at once
are serialised by an advisory lock.

What exists is read from the catalog (``automation.partition_days``), never
cached: writers read it in the transaction that writes, so a partition
dropped meanwhile by retention is never written to.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import psycopg

from flower_ops.db.schema import EXECUTIONS, HISTORY, SCHEMA

logger = logging.getLogger(__name__)

PARTITIONED = (EXECUTIONS, HISTORY)
EPOCH_DAY = date(1970, 1, 1)
# serialises processes creating partitions at once ("FlowPart")
CREATE_LOCK_KEY = 0x466C6F7750617274
# merges (shared) against the legacy mover (exclusive) while a legacy
# partition exists ("FlowMove")
MOVE_LOCK_KEY = 0x466C6F774D6F7665
LOCK_TIMEOUT = "2s"
DEFAULT_PARTITION_DAYS = 1
DEFAULT_DAYS_AHEAD = 7


def utc_day(epoch: float | None) -> date:
    """The UTC day of an instant (now when None)."""
    when = datetime.now(timezone.utc) if epoch is None else \
        datetime.fromtimestamp(epoch, timezone.utc)
    return when.date()


def bare(table: str) -> str:
    return table.split(".", 1)[1]


def partition_name(table: str, first_day: date) -> str:
    return f"{bare(table)}_p{first_day:%Y%m%d}"


@dataclass(frozen=True)
class Partition:
    name: str            # without the schema
    from_day: date       # first day in it
    to_day: date         # the day after its last
    legacy: bool         # the table as it was before 0005 (day 1970-01-01)

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"


def partitions(conn: psycopg.Connection, table: str = EXECUTIONS) -> list[Partition]:
    """``table``'s partitions, oldest first."""
    rows = conn.execute("SELECT name, from_day, to_day, legacy FROM "
                        f"{SCHEMA}.partition_days(%s::regclass) ORDER BY from_day",
                        (table,)).fetchall()
    return [Partition(r[0], r[1], r[2], bool(r[3])) for r in rows]


@dataclass(frozen=True)
class DayWindow:
    """The days rows can go to now: the first and last day of the
    partitions that exist (legacy left out), and whether a legacy partition
    still exists (the mover has work, merges take its lock)."""

    first: date | None
    last: date | None
    legacy: bool

    def clamp(self, day: date) -> date:
        """``day`` if a partition may hold it, else the nearest end (an
        outlier timestamp never fails a batch; it goes to the oldest or the
        newest partition)."""
        if self.first is None or self.last is None:
            return day
        return min(max(day, self.first), self.last)


_WINDOW_SQL = f"""
SELECT min(from_day) FILTER (WHERE NOT legacy), max(to_day) FILTER (WHERE NOT legacy),
       bool_or(legacy)
FROM (SELECT * FROM {SCHEMA}.partition_days(%s::regclass)
      UNION ALL SELECT * FROM {SCHEMA}.partition_days(%s::regclass)) p
"""


def day_window(conn: psycopg.Connection) -> DayWindow:
    """Read in the writer's transaction (see the module's docstring). The
    window is the executions table's; history partitions are created and
    dropped with the same ranges."""
    row = conn.execute(_WINDOW_SQL, (EXECUTIONS, HISTORY)).fetchone()
    if row is None or row[0] is None:
        return DayWindow(None, None, bool(row and row[2]))
    return DayWindow(row[0], row[1] - timedelta(days=1), bool(row[2]))


def enter_writer(conn: psycopg.Connection) -> DayWindow:
    """In a writer's transaction, before it looks up rows' days: the window,
    and (while a legacy partition exists) the mover's lock, shared, so no row
    moves between the look-up and the write."""
    window = day_window(conn)
    if window.legacy:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (MOVE_LOCK_KEY,))
    return window


def range_for(day: date, partition_days: int, existing: list[Partition]) -> tuple[date, date]:
    """The aligned range of ``partition_days`` days holding ``day``, cut so
    that it overlaps no existing partition."""
    offset = (day - EPOCH_DAY).days
    start = EPOCH_DAY + timedelta(days=offset - offset % partition_days)
    end = start + timedelta(days=partition_days)
    for p in existing:
        if p.legacy:
            continue
        if p.to_day <= day:
            start = max(start, p.to_day)
        elif p.from_day > day:
            end = min(end, p.from_day)
    return start, end


def covered(day: date, existing: list[Partition]) -> bool:
    return any(p.from_day <= day < p.to_day for p in existing if not p.legacy)


def create_partition(conn: psycopg.Connection, day: date, partition_days: int) -> list[str]:
    """The partition of each table holding ``day``, unless one exists;
    returns the names created. One short transaction per table."""
    created = []
    for table in PARTITIONED:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CREATE_LOCK_KEY,))
            existing = partitions(conn, table)
            if covered(day, existing):
                continue
            start, end = range_for(day, partition_days, existing)
            name = f"{SCHEMA}.{partition_name(table, start)}"
            # standalone first, then ATTACH: SHARE UPDATE EXCLUSIVE on the
            # parent, so reads and writes go on (PARTITION OF would block them)
            conn.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS "
                         "INCLUDING CONSTRAINTS)")
            conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} "
                         f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            created.append(name)
    if created:
        logger.info("created partitions %s", ", ".join(created))
    return created


def ensure_ahead(conn: psycopg.Connection, *, days_ahead: int = DEFAULT_DAYS_AHEAD,
                 partition_days: int | None = DEFAULT_PARTITION_DAYS,
                 today: date | None = None) -> list[str]:
    """Partitions from today (UTC) to ``days_ahead`` days ahead, both
    tables; returns the names created. ``conn`` in autocommit mode.
    ``partition_days`` None: the size of the newest partition (a process
    that does not know the sync worker's setting follows its layout)."""
    first = today or utc_day(None)
    created: list[str] = []
    have = {table: partitions(conn, table) for table in PARTITIONED}
    if partition_days is None:
        sized = [p for p in have[EXECUTIONS] if not p.legacy]
        partition_days = (sized[-1].to_day - sized[-1].from_day).days if sized \
            else DEFAULT_PARTITION_DAYS
    for n in range(days_ahead + 1):
        day = first + timedelta(days=n)
        if all(covered(day, have[t]) for t in PARTITIONED):
            continue
        created += create_partition(conn, day, partition_days)
        have = {table: partitions(conn, table) for table in PARTITIONED}
    return created


def estimated_rows(conn: psycopg.Connection, qualified: str) -> int:
    """The planner's row count of one table (0 before its first ANALYZE)."""
    row = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class "
                       "WHERE oid = %s::regclass", (qualified,)).fetchone()
    return int(row[0]) if row else 0
