"""Retention by partition: a day (or ``partition_days`` days) of history
leaves at once, whatever its size.

Every partition whose whole range is older than the cutoff is DETACHed from
``automation.job_executions``, and its twin (the same range) from
``automation.job_execution_history``, in one short transaction, then DROPped
(``delete``) or moved whole into the schema ``automation_archive``
(``archive``), where it stays a plain table of the same name, readable by
anyone. Granularity is a whole partition: a row goes when the last day of
its partition is past the cutoff, so with daily partitions a row is kept
between ``retention_days`` and ``retention_days`` + 1 days after its task
was first seen (whatever happened to it since).

DETACH takes an ACCESS EXCLUSIVE lock on the parent for a moment: the
transaction runs with a short ``lock_timeout``, and a lock not granted in
time (a long read holding the table) leaves the partition for the next
pass. The legacy partition (``migrations/0005``) is never retired here: the
mover (``partitions_mover.py``) empties it, deleting rows older than the
cutoff as it goes in ``delete`` mode.

Blocking, on the process's one pool. A database that cannot be reached
raises ``Unavailable``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

import psycopg

from flower_ops.core.errors import Unavailable
from flower_ops.db.duplicates import fold_duplicates
from flower_ops.db.partitions import (
    LOCK_TIMEOUT,
    PARTITIONED,
    Partition,
    ensure_ahead,
    estimated_rows,
    partitions,
    utc_day,
)
from flower_ops.db.partitions_mover import LegacyMover
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTIONS, SCHEMA

logger = logging.getLogger(__name__)

ARCHIVE_SCHEMA = f"{SCHEMA}_archive"


@dataclass(frozen=True)
class Retired:
    """One partition that left: where it went, and about how many rows."""

    table: str           # the partitioned table it was part of
    name: str            # its name (in ``automation_archive`` when archived)
    from_day: date
    to_day: date
    rows_estimate: int
    archived: bool


@dataclass
class RetentionReport:
    retired: list[Retired]
    skipped: list[str]   # partitions whose lock was not granted in time: next pass

    @property
    def rows_estimate(self) -> int:
        return sum(r.rows_estimate for r in self.retired if r.table == EXECUTIONS)


class Retention:
    """Retention and partition upkeep on the process's one pool."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.mover = LegacyMover(database)

    def fold_duplicates(self, *, within_seconds: float = 900.0) -> int:
        """Rows of one task written twice around midnight (``duplicates.py``)."""
        with self.database.connection() as conn:
            return fold_duplicates(conn, within_seconds=within_seconds)

    def ensure_partitions(self, *, days_ahead: int, partition_days: int) -> list[str]:
        """Today's partitions and ``days_ahead`` days ahead (``partitions.py``)."""
        with self.database.connection() as conn:
            return ensure_ahead(conn, days_ahead=days_ahead, partition_days=partition_days)

    def retire_partitions(self, *, cutoff_epoch: float, archive: bool = False
                          ) -> RetentionReport:
        """Detach every partition older than the cutoff (whole range), both
        tables; drop it, or with ``archive`` keep it in ``automation_archive``."""
        last_day = utc_day(cutoff_epoch)   # a range ending on or before it is all older
        report = RetentionReport([], [])
        try:
            with self.database.connection() as conn:
                ranges = sorted({(p.from_day, p.to_day)
                                 for table in PARTITIONED for p in partitions(conn, table)
                                 if not p.legacy and p.to_day <= last_day})
                for from_day, to_day in ranges:
                    try:
                        report.retired += self._retire(conn, from_day, to_day, archive)
                    except psycopg.errors.LockNotAvailable:
                        report.skipped.append(f"{from_day}..{to_day}")
                        logger.warning("retention: the lock for the partitions from %s was not "
                                       "granted within %s; next pass", from_day, LOCK_TIMEOUT)
                        break
        except psycopg.errors.QueryCanceled as exc:
            raise Unavailable("database statement timed out",
                              {"reason": str(exc)[:300]}) from exc
        return report

    def _retire(self, conn: psycopg.Connection, from_day: date, to_day: date,
                archive: bool) -> list[Retired]:
        """One range, both tables, one transaction."""
        done: list[Retired] = []
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            for table in PARTITIONED:     # the writers' order: executions, then history
                found = [p for p in partitions(conn, table)
                         if (p.from_day, p.to_day) == (from_day, to_day) and not p.legacy]
                for p in found:
                    rows = estimated_rows(conn, p.qualified)
                    conn.execute(f"ALTER TABLE {table} DETACH PARTITION {p.qualified}")
                    name = _archive(conn, p) if archive else _drop(conn, p)
                    done.append(Retired(table, name, from_day, to_day, rows, archive))
        for r in done:
            logger.info("retention: %s %s (%s to %s, about %d rows)",
                        "archived" if r.archived else "dropped", r.name, r.from_day,
                        r.to_day, r.rows_estimate)
        return done


def _drop(conn: psycopg.Connection, p: Partition) -> str:
    conn.execute(f"DROP TABLE {p.qualified}")
    return p.name


def _archive(conn: psycopg.Connection, p: Partition) -> str:
    """Into ``automation_archive``, under its own name, or with a suffix
    when a table of that name was archived before (a day the mover filled
    again); its indexes get the same suffix."""
    name = p.name
    taken = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                         (f"{ARCHIVE_SCHEMA}.{name}",)).fetchone()
    if taken and taken[0]:
        suffix = f"_{int(time.time())}"
        name = f"{p.name}{suffix}"
        conn.execute(f"ALTER TABLE {p.qualified} RENAME TO {name}")
        for (index,) in conn.execute(
                "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                "WHERE x.indrelid = %s::regclass", (f"{SCHEMA}.{name}",)).fetchall():
            conn.execute(f'ALTER INDEX {SCHEMA}."{index}" RENAME TO '
                         f'"{index[:63 - len(suffix)]}{suffix}"')
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}")
    conn.execute(f"ALTER TABLE {SCHEMA}.{name} SET SCHEMA {ARCHIVE_SCHEMA}")
    return f"{ARCHIVE_SCHEMA}.{name}"
