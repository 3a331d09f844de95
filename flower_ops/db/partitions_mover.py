"""The mover: empties the legacy partitions (``migrations/0005``: the tables
as they were before partitioning, attached whole as day 1970-01-01) into
the partitions of their real days, a batch at a time, while the sync worker
keeps writing; then detaches and drops them.

Each batch is one transaction, so the work is restartable: a stop, a crash
or a lost connection loses at most the batch in flight, which is then still
in the legacy partition. A batch takes the oldest ``batch_size`` rows
(``first_seen_at``), DELETEs them ... RETURNING, and INSERTs them again with
``first_seen_day`` = the UTC day of ``first_seen_at`` (the partition is
created when missing; a day past the newest partition goes to the newest),
then moves their history rows to the same day (``ON CONFLICT DO NOTHING``: a
transition a replayed event wrote meanwhile is kept once). In ``delete``
retention mode, rows whose day's partition is already past the cutoff are
deleted instead of moved (the batched delete of old rows lives on only
here). History rows left without a task row (none is shown anywhere) are
deleted at the end.

Merges look up a row's day and then write it: the mover must not move that
row in between. Writers take ``MOVE_LOCK_KEY`` shared for their transaction
while a legacy partition exists (``partitions.enter_writer``); a batch takes
it exclusive, so it waits for the merges in flight and they wait for it (a
batch is short).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import psycopg

from flower_ops.db.partitions import (
    LOCK_TIMEOUT,
    MOVE_LOCK_KEY,
    PARTITIONED,
    Partition,
    create_partition,
    day_window,
    partitions,
    range_for,
)
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTIONS, HISTORY, SCHEMA

logger = logging.getLogger(__name__)

LEGACY_EXECUTIONS = f"{SCHEMA}.job_executions_legacy"
LEGACY_HISTORY = f"{SCHEMA}.job_execution_history_legacy"
_DAY = "(first_seen_at AT TIME ZONE 'UTC')::date"


@dataclass
class MoveReport:
    moved: int = 0            # task rows now in their day's partition
    deleted: int = 0          # task rows past retention, deleted instead
    history: int = 0          # history rows moved or deleted
    finished: bool = False    # no legacy partition is left


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                        "AND attnum > 0 AND NOT attisdropped AND attname <> 'first_seen_day' "
                        "ORDER BY attnum", (table,)).fetchall()
    return [f'"{r[0]}"' for r in rows]


class LegacyMover:
    def __init__(self, database: Database) -> None:
        self.database = database

    def legacy(self) -> list[Partition]:
        """The legacy partitions still attached."""
        with self.database.connection() as conn:
            return [p for table in PARTITIONED for p in partitions(conn, table) if p.legacy]

    def move_batch(self, *, batch_size: int = 5000, partition_days: int = 1,
                   drop_before: date | None = None) -> MoveReport:
        """One batch (one transaction). ``drop_before``: rows whose
        partition would end on or before that day are deleted, not moved."""
        report = MoveReport()
        with self.database.connection() as conn:
            legacy = {p.qualified for table in PARTITIONED for p in partitions(conn, table)
                      if p.legacy}
            if not legacy:
                report.finished = True
                return report
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MOVE_LOCK_KEY,))
                if LEGACY_EXECUTIONS in legacy:
                    self._move_rows(conn, report, batch_size, partition_days, drop_before)
                if not (report.moved or report.deleted) and LEGACY_HISTORY in legacy:
                    self._orphans(conn, report, batch_size)
            if report.moved or report.deleted or report.history:
                return report
            # Empty: nobody writes to them any more (a writer goes there only
            # for a row it found there), so no need for the mover's lock, which
            # could close a cycle with DETACH's lock on the parent
            self._detach(conn, legacy)
            report.finished = True
        return report

    def _move_rows(self, conn: psycopg.Connection, report: MoveReport, batch_size: int,
                   partition_days: int, drop_before: date | None) -> None:
        days = [r[0] for r in conn.execute(
            f"SELECT DISTINCT {_DAY} FROM (SELECT first_seen_at FROM {LEGACY_EXECUTIONS} "
            "ORDER BY first_seen_at, execution_id LIMIT %s) s", (batch_size,))]
        if not days:
            return
        window = day_window(conn)
        existing = partitions(conn, EXECUTIONS)
        dropped: list[date] = []
        for day in days:
            if window.last is not None and day > window.last:
                continue       # clamped to the newest partition below
            if drop_before is not None and \
                    range_for(day, partition_days, existing)[1] <= drop_before:
                dropped.append(day)
                continue
            if create_partition(conn, day, partition_days):
                existing = partitions(conn, EXECUTIONS)
        last = window.last or max(days)
        cols = ", ".join(_columns(conn, EXECUTIONS))
        placed = conn.execute(
            f"""WITH victims AS (
                    SELECT execution_id FROM {LEGACY_EXECUTIONS}
                    ORDER BY first_seen_at, execution_id LIMIT %(n)s),
                gone AS (
                    DELETE FROM {LEGACY_EXECUTIONS} l USING victims v
                    WHERE l.execution_id = v.execution_id RETURNING l.*),
                placed AS (
                    SELECT g.*, least({_DAY}, %(last)s::date) AS new_day,
                           {_DAY} = ANY(%(dropped)s::date[]) AS dropped FROM gone g),
                moved AS (
                    INSERT INTO {EXECUTIONS} ({cols}, first_seen_day)
                    SELECT {cols}, new_day FROM placed WHERE NOT dropped
                    ON CONFLICT (execution_id, first_seen_day) DO NOTHING)
                SELECT execution_id, new_day, dropped FROM placed""",
            {"n": batch_size, "last": last, "dropped": dropped}).fetchall()
        ids = [r[0] for r in placed]
        new_days = [None if r[2] else r[1] for r in placed]
        report.deleted = sum(1 for r in placed if r[2])
        report.moved = len(placed) - report.deleted
        hcols = ", ".join(_columns(conn, HISTORY))
        cur = conn.execute(
            f"""WITH placed AS (
                    SELECT unnest(%(ids)s::text[]) AS id, unnest(%(days)s::date[]) AS day),
                gone AS (
                    DELETE FROM {LEGACY_HISTORY} h WHERE h.execution_id = ANY(%(ids)s)
                    RETURNING h.*)
                INSERT INTO {HISTORY} ({hcols}, first_seen_day)
                SELECT {", ".join(f"g.{c}" for c in _columns(conn, HISTORY))}, p.day
                FROM gone g JOIN placed p ON p.id = g.execution_id WHERE p.day IS NOT NULL
                ON CONFLICT (execution_id, first_seen_day, state, occurred_at) DO NOTHING""",
            {"ids": ids, "days": new_days})
        report.history = cur.rowcount

    def _orphans(self, conn: psycopg.Connection, report: MoveReport, batch_size: int) -> None:
        """History rows of the legacy partition once no legacy task row is
        left: to their task's day, deleted when their task has no row."""
        hcols = _columns(conn, HISTORY)
        cur = conn.execute(
            f"""WITH victims AS (
                    SELECT ctid FROM {LEGACY_HISTORY} LIMIT %(n)s),
                gone AS (
                    DELETE FROM {LEGACY_HISTORY} h USING victims v WHERE h.ctid = v.ctid
                    RETURNING h.*),
                moved AS (
                    INSERT INTO {HISTORY} ({", ".join(hcols)}, first_seen_day)
                    SELECT {", ".join(f"g.{c}" for c in hcols)}, e.first_seen_day
                    FROM gone g JOIN LATERAL (
                        SELECT first_seen_day FROM {EXECUTIONS} e
                        WHERE e.execution_id = g.execution_id LIMIT 1) e ON true
                    ON CONFLICT (execution_id, first_seen_day, state, occurred_at) DO NOTHING)
                SELECT count(*) FROM gone""", {"n": batch_size})
        row = cur.fetchone()
        report.history = int(row[0]) if row else 0

    def _detach(self, conn: psycopg.Connection, legacy: set[str]) -> None:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            for table, part in ((EXECUTIONS, LEGACY_EXECUTIONS), (HISTORY, LEGACY_HISTORY)):
                if part in legacy:
                    conn.execute(f"ALTER TABLE {table} DETACH PARTITION {part}")
                    left = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {part})").fetchone()
                    if left and left[0]:
                        raise RuntimeError(f"{part} is not empty: not dropped")  # rolled back
                    conn.execute(f"DROP TABLE {part}")
        logger.info("partition migration done: %s emptied, detached and dropped",
                    ", ".join(sorted(legacy)))


