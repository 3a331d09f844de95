"""Repair of the one write race partitioning adds (``placement.py``): two
transactions writing the same *new* task at once, each finding no row, with
first timestamps on either side of midnight UTC, insert it twice, once per
day. Both rows are then new (``created_at`` within a transaction's length
of each other), so the sync worker's leader looks for ids with two rows
among the rows created lately, every maintenance pass, and folds the newer
day's row into the older one through the batch merge (the same monotonic
guard as every write: nothing a row knew is lost), its history with it.
"""
from __future__ import annotations

import logging

import psycopg

from flower_ops.db.batch import STAGING_COLUMNS, merge_staged
from flower_ops.db.schema import EXECUTIONS, HISTORY, STAGING

logger = logging.getLogger(__name__)

_TABLE_COLUMN = {"first_seen": "first_seen_at"}


def _staged_from_row() -> str:
    """The staging columns, read from a deleted row (``gone``)."""
    out = []
    for column, kind in STAGING_COLUMNS:
        source = f"g.{_TABLE_COLUMN.get(column, column)}"
        if column == "first_seen_day":
            out.append("%(day)s::date")
        elif kind == "float8" and column != "runtime":
            out.append(f"extract(epoch FROM {source})::float8")
        else:
            out.append(source)
    return ", ".join(out)


_FIND = f"""
SELECT execution_id, array_agg(first_seen_day ORDER BY first_seen_day)
FROM {EXECUTIONS} WHERE created_at > now() - make_interval(secs => %s)
GROUP BY execution_id HAVING count(*) > 1 LIMIT 1000
"""
_TAKE = f"""
WITH gone AS (DELETE FROM {EXECUTIONS} WHERE execution_id = %(id)s
              AND first_seen_day = %(from)s RETURNING *),
staged AS (INSERT INTO {STAGING} ({", ".join(c for c, _ in STAGING_COLUMNS)})
           SELECT {_staged_from_row()} FROM gone g)
SELECT retry_of, retried_as FROM gone
"""
_LINKS = f"""
UPDATE {EXECUTIONS} SET retry_of = COALESCE(retry_of, %(retry_of)s),
    retried_as = COALESCE(retried_as, %(retried_as)s)
WHERE execution_id = %(id)s AND first_seen_day = %(day)s
"""
_HISTORY = f"""
WITH gone AS (DELETE FROM {HISTORY} WHERE execution_id = %(id)s
              AND first_seen_day = %(from)s RETURNING *)
INSERT INTO {HISTORY} (execution_id, state, occurred_at, worker, source, detail,
                       recorded_at, first_seen_day)
SELECT execution_id, state, occurred_at, worker, source, detail, recorded_at, %(day)s
FROM gone ON CONFLICT (execution_id, first_seen_day, state, occurred_at) DO NOTHING
"""


def fold_duplicates(conn: psycopg.Connection, *, within_seconds: float = 900.0) -> int:
    """Fold every task with two rows among those created in the last
    ``within_seconds``; returns how many were folded. ``conn`` is a
    connection of the sync worker's pool (it has the staging table)."""
    found = conn.execute(_FIND, (within_seconds,)).fetchall()
    for task_id, days in found:
        keep = days[0]
        with conn.transaction():
            for extra in days[1:]:
                params = {"id": task_id, "from": extra, "day": keep}
                conn.execute(f"DELETE FROM {STAGING}")
                links = conn.execute(_TAKE, params).fetchone()
                merge_staged(conn)
                if links is not None:
                    conn.execute(_LINKS, {**params, "retry_of": links[0],
                                          "retried_as": links[1]})
                conn.execute(_HISTORY, params)
        logger.warning("task %s had a row on each of %s (written at once around midnight "
                       "UTC): folded into %s", task_id, ", ".join(map(str, days)), keep)
    return len(found)
