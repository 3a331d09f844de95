"""What ``migrations/0005_partitions.sql`` needs from a big existing table,
done before its transaction and without blocking the sync worker's writes
(``migrate.py`` runs it, autocommit, when 0005 is not applied yet).

The day column is added with a constant default (no rewrite, a moment's
lock); the CHECK that proves the legacy partition's bound is added NOT
VALID (a moment) and validated (a scan under a lock that lets writes go
on); the unique indexes the partitioned keys need are built CONCURRENTLY.
The migration's own transaction then only renames and attaches. Every
step is idempotent: an interrupted start redoes what was left (an index a
cancelled CONCURRENTLY build left invalid is dropped and built again).
"""
from __future__ import annotations

import logging
import time

import psycopg

logger = logging.getLogger(__name__)

# "FlowPrep"; migrations/0005 takes it too, for its transaction: it never
# runs while another process prepares
PREPARE_LOCK_KEY = 0x466C6F7750726570

# (table, CHECK name, unique index name, unique index columns)
_TABLES = (
    ("automation.job_executions", "job_executions_legacy_day",
     "job_executions_legacy_day_key", "execution_id, first_seen_day"),
    ("automation.job_execution_history", "job_execution_history_legacy_day",
     "job_execution_history_legacy_day_key",
     "execution_id, first_seen_day, state, occurred_at"),
)


def _plain_table(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
                       (table,)).fetchone()
    return row is not None and row[0] == "r"


def _try_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (PREPARE_LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def prepare_partitions(conn: psycopg.Connection) -> None:
    """``conn`` in autocommit mode."""
    if not all(_plain_table(conn, t) for t, *_ in _TABLES):
        return      # a fresh database (0001 not applied yet) or already partitioned
    # Polled, not waited for: a session waiting inside a statement holds a
    # snapshot, which CREATE INDEX CONCURRENTLY would wait for in turn
    while not _try_lock(conn):
        time.sleep(0.1)
    try:
        for table, check, index, columns in _TABLES:
            if not _plain_table(conn, table):
                continue
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "
                         "first_seen_day date NOT NULL DEFAULT '1970-01-01'")
            has_check = conn.execute("SELECT 1 FROM pg_constraint WHERE conname = %s "
                                     "AND conrelid = %s::regclass", (check, table)).fetchone()
            if not has_check:
                conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK "
                             "(first_seen_day >= '1970-01-01' AND first_seen_day < '1970-01-02')"
                             " NOT VALID")
            conn.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}")
            valid = conn.execute("SELECT x.indisvalid FROM pg_index x "
                                 "WHERE x.indexrelid = to_regclass(%s)",
                                 (f"automation.{index}",)).fetchone()
            if valid and not valid[0]:
                conn.execute(f"DROP INDEX CONCURRENTLY automation.{index}")
            if not valid or not valid[0]:
                logger.info("building %s on %s (concurrently)", index, table)
                conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {index} "
                             f"ON {table} ({columns})")
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (PREPARE_LOCK_KEY,))
