"""Retention: rows older than a cutoff leave ``automation.job_executions``,
deleted or moved to ``automation.job_executions_archive``, with their history,
a small transaction at a time (the sync worker's maintenance loop calls it
until a batch comes back short, pausing between batches so the writer is
never blocked for long).

A row goes when its task was first seen before the cutoff and it has not
changed since; rows the writer holds locked are skipped, not waited for.
"""
from __future__ import annotations

import psycopg

from flower_ops.core.errors import Unavailable
from flower_ops.db.pool import Database
from flower_ops.db.schema import ARCHIVE, EXECUTIONS, HISTORY

_PURGE_SQL = f"""
WITH victims AS (
    SELECT execution_id FROM {EXECUTIONS}
    WHERE first_seen_at < to_timestamp(%(cutoff)s)
      AND updated_at < to_timestamp(%(cutoff)s)
    ORDER BY first_seen_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
gone AS (
    DELETE FROM {EXECUTIONS} j USING victims v
    WHERE j.execution_id = v.execution_id RETURNING j.*),
history AS (
    DELETE FROM {HISTORY} h USING gone g
    WHERE h.execution_id = g.execution_id)
"""
_DELETE_SQL = _PURGE_SQL + "SELECT count(*) FROM gone"
_ARCHIVE_SQL = _PURGE_SQL + f"INSERT INTO {ARCHIVE} SELECT * FROM gone"


class Retention:
    """Blocking, on the process's one pool. A database that cannot be
    reached, or a statement that timed out, raises ``Unavailable``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def purge_older_than(self, *, cutoff_epoch: float, batch_size: int = 1000,
                         archive: bool = False) -> int:
        """Delete (or archive) one batch of rows older than the cutoff.
        Returns the number of rows removed; call again until it returns fewer
        than ``batch_size``."""
        params = {"cutoff": cutoff_epoch, "limit": batch_size}
        try:
            with self._db.connection() as conn, conn.transaction():
                cur = conn.execute(_ARCHIVE_SQL if archive else _DELETE_SQL, params)
                if archive:
                    return int(cur.rowcount)
                row = cur.fetchone()
                return int(row[0]) if row else 0
        except psycopg.errors.QueryCanceled as exc:   # statement_timeout: next time
            raise Unavailable("database statement timed out",
                              {"reason": str(exc)[:300]}) from exc
