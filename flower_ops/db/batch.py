"""The sync worker's writer: batches of task deltas merged into
``automation.job_executions`` and its history, and the reads reconciliation
and discovery need (no Celery here).

A batch is one transaction: deltas are COPYed into a temporary staging table
and merged with one ``INSERT ... ON CONFLICT DO UPDATE`` whose every column
goes through the monotonic guard (``automation.status_advances``); history
rows are COPYed and inserted with ``ON CONFLICT DO NOTHING``. Replaying a
batch is therefore harmless, which is what makes retrying after a cut
connection (committed or not, we cannot know) safe. Rows are merged in id
order, so batches of the writer, reconciliation and discovery, running at
once on connections of the one pool, lock rows in the same order and never
deadlock.

The staging tables are per session (``TEMP``): ``create_staging_tables`` is
the pool's ``configure`` hook, so every connection has them
(``batch_database`` builds such a pool).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from flower_ops.core.errors import Unavailable
from flower_ops.core.transitions import MISSING, TaskDelta, Transition
from flower_ops.db.jsonsafe import clean_text, jsonb_text
from flower_ops.db.placement import history_day, place
from flower_ops.db.pool import Database
from flower_ops.db.schema import (
    EXECUTIONS,
    HISTORY,
    HISTORY_STAGING,
    OPEN_STATUS_LIST,
    STAGING,
    STATUS_ADVANCES,
    TIME_COLUMNS,
)

# One row per delta, in ``_staging_row``'s order
_STAGING_COLUMNS = (
    ("execution_id", "text"), ("task_name", "text"), ("status", "text"),
    ("status_at", "float8"), ("worker_lost", "bool"), ("args", "jsonb"), ("kwargs", "jsonb"),
    ("args_exact", "bool"), ("result", "jsonb"), ("error", "text"), ("traceback", "text"),
    ("worker", "text"), ("queue", "text"), ("routing_key", "text"), ("exchange", "text"),
    ("retries", "int"), ("parent_id", "text"), ("root_id", "text"), ("eta", "float8"),
    ("expires", "float8"), ("runtime", "float8"), ("trace_id", "text"),
    ("workflow_id", "text"), ("canvas", "jsonb"), ("links", "jsonb"),
    *((column, "float8") for column in TIME_COLUMNS.values()),
    ("first_seen", "float8"), ("reconciled_at", "float8"), ("first_seen_day", "date"),
)
_HISTORY_STAGING_COLUMNS = (
    ("execution_id", "text"), ("state", "text"), ("occurred_at", "float8"), ("worker", "text"),
    ("source", "text"), ("detail", "jsonb"), ("first_seen_day", "date"),
)


def _table(name: str, columns: Sequence[tuple[str, str]]) -> str:
    # pg_temp.x is how we read it; CREATE TEMP TABLE takes the bare name
    bare = name.removeprefix("pg_temp.")
    return (f"CREATE TEMP TABLE IF NOT EXISTS {bare} "
            f"({', '.join(f'{c} {t}' for c, t in columns)}) ON COMMIT DELETE ROWS")


_CREATE_STAGING = _table(STAGING, _STAGING_COLUMNS)
_CREATE_HISTORY_STAGING = _table(HISTORY_STAGING, _HISTORY_STAGING_COLUMNS)
_COPY_STAGING = f"COPY {STAGING} ({', '.join(c for c, _ in _STAGING_COLUMNS)}) FROM STDIN"
_COPY_HISTORY_STAGING = f"COPY {HISTORY_STAGING} FROM STDIN"


def _ts(expr: str) -> str:
    return f"to_timestamp({expr})"


_TIMES = TIME_COLUMNS.values()
_ADV = (f"{STATUS_ADVANCES}(j.status, j.status_at, j.worker_lost, "
        "EXCLUDED.status, EXCLUDED.status_at)")

_MERGE_SQL = f"""
INSERT INTO {EXECUTIONS} AS j (
    execution_id, task_name, status, status_at, worker_lost, args, kwargs, args_exact,
    result, error, traceback, worker, queue, routing_key, exchange, retries, parent_id,
    root_id, eta, expires, runtime, trace_id, workflow_id, canvas, links,
    {", ".join(_TIMES)},
    first_seen_at, reconciled_at, first_seen_day)
SELECT execution_id, task_name, COALESCE(status, 'pending'), {_ts("status_at")},
    worker_lost, args, kwargs, args_exact, result, error, traceback, worker, queue,
    routing_key, exchange, retries, parent_id, root_id, {_ts("eta")}, {_ts("expires")},
    runtime, trace_id, workflow_id, canvas, links, {", ".join(_ts(c) for c in _TIMES)},
    COALESCE({_ts("first_seen")}, now()), {_ts("reconciled_at")}, first_seen_day
FROM {STAGING}
ORDER BY execution_id
ON CONFLICT (execution_id, first_seen_day) DO UPDATE SET
    status = CASE WHEN {_ADV} THEN EXCLUDED.status ELSE j.status END,
    status_at = CASE WHEN {_ADV} THEN EXCLUDED.status_at ELSE j.status_at END,
    worker_lost = CASE WHEN {_ADV} THEN EXCLUDED.worker_lost ELSE j.worker_lost END,
    task_name = COALESCE(j.task_name, EXCLUDED.task_name),
    args = CASE WHEN EXCLUDED.args IS NOT NULL AND (j.args IS NULL
                OR (EXCLUDED.args_exact AND NOT j.args_exact)) THEN EXCLUDED.args
           ELSE j.args END,
    kwargs = CASE WHEN EXCLUDED.kwargs IS NOT NULL AND (j.kwargs IS NULL
                OR (EXCLUDED.args_exact AND NOT j.args_exact)) THEN EXCLUDED.kwargs
             ELSE j.kwargs END,
    args_exact = j.args_exact OR (EXCLUDED.args_exact AND EXCLUDED.args IS NOT NULL),
    result = CASE WHEN {_ADV} THEN COALESCE(EXCLUDED.result, j.result)
                  WHEN EXCLUDED.status = j.status THEN COALESCE(j.result, EXCLUDED.result)
                  ELSE j.result END,
    error = CASE WHEN {_ADV} THEN CASE WHEN EXCLUDED.status = 'success' THEN NULL
                                       ELSE COALESCE(EXCLUDED.error, j.error) END
                 WHEN EXCLUDED.status = j.status THEN COALESCE(j.error, EXCLUDED.error)
                 ELSE j.error END,
    traceback = CASE WHEN {_ADV} THEN CASE WHEN EXCLUDED.status = 'success' THEN NULL
                                           ELSE COALESCE(EXCLUDED.traceback, j.traceback) END
                     WHEN EXCLUDED.status = j.status
                         THEN COALESCE(j.traceback, EXCLUDED.traceback)
                     ELSE j.traceback END,
    runtime = CASE WHEN {_ADV} THEN COALESCE(EXCLUDED.runtime, j.runtime)
                   ELSE COALESCE(j.runtime, EXCLUDED.runtime) END,
    worker = CASE WHEN {_ADV} THEN COALESCE(EXCLUDED.worker, j.worker)
                  ELSE COALESCE(j.worker, EXCLUDED.worker) END,
    queue = COALESCE(j.queue, EXCLUDED.queue),
    routing_key = COALESCE(j.routing_key, EXCLUDED.routing_key),
    exchange = COALESCE(j.exchange, EXCLUDED.exchange),
    retries = GREATEST(j.retries, EXCLUDED.retries),
    parent_id = COALESCE(j.parent_id, EXCLUDED.parent_id),
    root_id = COALESCE(j.root_id, EXCLUDED.root_id),
    eta = COALESCE(j.eta, EXCLUDED.eta),
    expires = COALESCE(j.expires, EXCLUDED.expires),
    trace_id = COALESCE(j.trace_id, EXCLUDED.trace_id),
    workflow_id = COALESCE(j.workflow_id, EXCLUDED.workflow_id),
    canvas = COALESCE(j.canvas, EXCLUDED.canvas),
    links = COALESCE(j.links, EXCLUDED.links),
    {", ".join(f"{c} = LEAST(j.{c}, EXCLUDED.{c})" for c in _TIMES)},
    -- the sent time once known (a worker's received can read earlier: the
    -- client stamps task-sent after publishing), else the earliest seen
    first_seen_at = COALESCE(LEAST(j.sent_at, EXCLUDED.sent_at),
                             LEAST(j.first_seen_at, EXCLUDED.first_seen_at)),
    reconciled_at = GREATEST(j.reconciled_at, EXCLUDED.reconciled_at)
"""

_HISTORY_SQL = f"""
INSERT INTO {HISTORY}
    (execution_id, state, occurred_at, worker, source, detail, first_seen_day)
SELECT execution_id, state, to_timestamp(occurred_at), worker, source, detail, first_seen_day
FROM {HISTORY_STAGING}
ORDER BY execution_id, state, occurred_at
ON CONFLICT (execution_id, first_seen_day, state, occurred_at) DO NOTHING
"""


STAGING_COLUMNS = _STAGING_COLUMNS


def merge_staged(conn: psycopg.Connection) -> None:
    """Merge what the staging table holds (``duplicates.py`` stages a row)."""
    conn.execute(_MERGE_SQL)


def create_staging_tables(conn: psycopg.Connection) -> None:
    """The pool's ``configure`` hook: this session's staging tables."""
    conn.execute(_CREATE_STAGING)
    conn.execute(_CREATE_HISTORY_STAGING)


def batch_database(url: str, *, application_name: str = "sync-worker",
                   max_size: int = 6) -> Database:
    """The sync worker's pool: every connection with its staging tables.

    ``max_size`` covers the leader's lock, the writer, reconciliation and
    discovery at once, with room for a term's threads still finishing.
    """
    return Database(url=url, application_name=application_name, max_size=max_size,
                    statement_timeout_seconds=60.0, configure=create_staging_tables)


def _json(value: Any) -> str | None:
    return _json_checked(value)[0]


def _json_checked(value: Any) -> tuple[str | None, bool]:
    """(JSON text jsonb accepts, whether a NUL had to be spelled out)."""
    if value is MISSING:
        return None, False
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    return jsonb_text(text)


def _staging_row(d: TaskDelta) -> tuple[Any, ...]:
    args, args_changed = _json_checked(d.args)
    kwargs, kwargs_changed = _json_checked(d.kwargs)
    # a stored copy with NUL spelled out is not the exact payload any more
    exact = d.args_exact and not (args_changed or kwargs_changed)
    # Every text column is cleaned: PostgreSQL text cannot hold NUL, and any
    # field of an event (even the id or the task name, from a hostile or
    # buggy producer) can carry one; a refused batch would stall the writer.
    return (
        clean_text(d.task_id), clean_text(d.task_name), d.status, d.status_at, d.worker_lost,
        args, kwargs, exact, _json(d.result), clean_text(d.error),
        clean_text(d.traceback), clean_text(d.worker), clean_text(d.queue),
        clean_text(d.routing_key), clean_text(d.exchange), d.retries,
        clean_text(d.parent_id), clean_text(d.root_id), d.eta, d.expires, d.runtime,
        clean_text(d.trace_id), clean_text(d.workflow_id),
        None if d.canvas is None else _json(d.canvas),
        None if d.links is None else _json(d.links),
        *(d.times.get(name) for name in TIME_COLUMNS), d.first_seen, d.reconciled_at,
    )


def _history_row(t: Transition) -> tuple[Any, ...]:
    detail = {k: t.fields[k] for k in ("error", "retries", "runtime", "operator", "reason")
              if t.fields.get(k) is not None}
    return (clean_text(t.task_id), t.state, t.timestamp, clean_text(t.fields.get("worker")),
            t.source, _json(detail) if detail else None)


@dataclass(frozen=True)
class OpenExecution:
    """A row that is not final yet, as reconciliation sees it."""

    task_id: str
    status: str
    worker: str | None
    status_at: float | None
    updated_at: float


class PgExecutionStore:
    """The sync worker's writer and its reads, on the process's one pool.

    Blocking; safe from several threads (each call borrows its own
    connection). A database that cannot be reached, a cut connection or a
    statement that timed out raise ``Unavailable``: the caller backs off and
    retries (a batch is idempotent).

    ``database`` must create the staging tables on its connections
    (``batch_database``). ``database_url`` instead: a store with a pool of its
    own, closed by ``close()`` (scripts, tests).
    """

    def __init__(self, database: Database | None = None, *,
                 database_url: str | None = None) -> None:
        self._owns_database = database is None
        if database is None:
            if database_url is None:
                raise TypeError("PgExecutionStore needs a database or a database_url")
            database = batch_database(database_url)
        self.database = database

    def close(self) -> None:
        if self._owns_database:
            self.database.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            with self.database.connection() as conn:
                yield conn
        except psycopg.errors.QueryCanceled as exc:   # statement_timeout: try again later
            raise Unavailable("database statement timed out",
                              {"reason": str(exc)[:300]}) from exc

    def apply(self, deltas: Iterable[TaskDelta], transitions: Sequence[Transition]) -> int:
        """Merge one batch (one delta per task id) and its history; returns the
        number of rows inserted or changed."""
        staged = [(_staging_row(d), d.first_seen, d.times.get("sent")) for d in deltas]
        if not staged:
            return 0
        history = [_history_row(t) for t in transitions]
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            # the partition each row is in, or goes to (``placement.py``)
            days = place(conn, [(row[0], first_seen) for row, first_seen, _ in staged],
                         {row[0]: sent for row, _, sent in staged})
            with cur.copy(_COPY_STAGING) as copy:
                for row, _, _ in staged:
                    copy.write_row((*row, days[row[0]]))
            cur.execute(_MERGE_SQL)
            changed = cur.rowcount
            if history:
                with cur.copy(_COPY_HISTORY_STAGING) as copy:
                    for hrow in history:
                        copy.write_row((*hrow, history_day(days, hrow[0], hrow[2])))
                cur.execute(_HISTORY_SQL)
        return int(changed)

    def open_executions(self, *, after_id: str | None = None, limit: int = 1000,
                        settled_seconds: float = 0.0) -> list[OpenExecution]:
        """Rows not final yet, by id (keyset), untouched for ``settled_seconds``."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT execution_id, status, worker, extract(epoch FROM status_at), "
                f"extract(epoch FROM updated_at) FROM {EXECUTIONS} "
                f"WHERE status IN ({OPEN_STATUS_LIST}) "
                "AND execution_id > %s AND updated_at <= now() - make_interval(secs => %s) "
                "ORDER BY execution_id LIMIT %s",
                (after_id or "", settled_seconds, limit)).fetchall()
        return [OpenExecution(r[0], r[1], r[2], float(r[3]) if r[3] is not None else None,
                              float(r[4])) for r in found]

    def known_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of ``task_ids`` have a row (discovery inserts only the others)."""
        if not task_ids:
            return set()
        with self._connection() as conn:
            found = conn.execute(f"SELECT execution_id FROM {EXECUTIONS} "
                                 "WHERE execution_id = ANY(%s)", (list(task_ids),)).fetchall()
        return {r[0] for r in found}
