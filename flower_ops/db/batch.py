"""PostgreSQL out: ``automation.job_executions`` and its history (no Celery here).

A batch is one transaction: deltas are COPYed into a temporary staging table
and merged with one ``INSERT ... ON CONFLICT DO UPDATE`` whose every column
goes through the monotonic guard (``automation.status_advances``); history
rows are COPYed and inserted with ``ON CONFLICT DO NOTHING``. Replaying a
batch is therefore harmless, which is what makes retrying after a cut
connection (committed or not, we cannot know) safe.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from flower_ops.db.jsonsafe import clean_text, jsonb_text
from flower_ops.db.migrate import migrate
from flower_ops.core.transitions import _MISSING, TaskDelta, Transition

logger = logging.getLogger(__name__)

TIME_FIELDS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")
OPEN_STATUSES = ("pending", "received", "started", "retry")


class StoreUnavailable(psycopg.OperationalError):
    """The database cannot be reached; the caller backs off and retries."""


_STAGING_COLUMNS = (
    "execution_id text, task_name text, status text, status_at float8, worker_lost bool, "
    "args jsonb, kwargs jsonb, args_exact bool, result jsonb, error text, traceback text, "
    "worker text, queue text, routing_key text, exchange text, retries int, parent_id text, "
    "root_id text, eta float8, expires float8, runtime float8, "
    + ", ".join(f"{name}_at float8" for name in TIME_FIELDS)
    + ", first_seen float8, reconciled_at float8"
)
_STAGING_NAMES = [part.strip().split(" ")[0] for part in _STAGING_COLUMNS.split(",")]


def _ts(expr: str) -> str:
    return f"to_timestamp({expr})"


_ADV = ("automation.status_advances(j.status, j.status_at, j.worker_lost, "
        "EXCLUDED.status, EXCLUDED.status_at)")

_MERGE_SQL = f"""
INSERT INTO automation.job_executions AS j (
    execution_id, task_name, status, status_at, worker_lost, args, kwargs, args_exact,
    result, error, traceback, worker, queue, routing_key, exchange, retries, parent_id,
    root_id, eta, expires, runtime, {", ".join(f"{n}_at" for n in TIME_FIELDS)},
    first_seen_at, reconciled_at)
SELECT execution_id, task_name, COALESCE(status, 'pending'), {_ts("status_at")},
    worker_lost, args, kwargs, args_exact, result, error, traceback, worker, queue,
    routing_key, exchange, retries, parent_id, root_id, {_ts("eta")}, {_ts("expires")},
    runtime, {", ".join(_ts(f"{n}_at") for n in TIME_FIELDS)},
    COALESCE({_ts("first_seen")}, now()), {_ts("reconciled_at")}
FROM pg_temp.sync_staging
ON CONFLICT (execution_id) DO UPDATE SET
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
    {", ".join(f"{n}_at = LEAST(j.{n}_at, EXCLUDED.{n}_at)" for n in TIME_FIELDS)},
    first_seen_at = LEAST(j.first_seen_at, EXCLUDED.first_seen_at),
    reconciled_at = GREATEST(j.reconciled_at, EXCLUDED.reconciled_at)
"""

_HISTORY_SQL = """
INSERT INTO automation.job_execution_history
    (execution_id, state, occurred_at, worker, source, detail)
SELECT execution_id, state, to_timestamp(occurred_at), worker, source, detail
FROM pg_temp.sync_history_staging
ON CONFLICT (execution_id, state, occurred_at) DO NOTHING
"""


def _json(value: Any) -> str | None:
    return _json_checked(value)[0]


def _json_checked(value: Any) -> tuple[str | None, bool]:
    """(JSON text jsonb accepts, whether a NUL had to be spelled out)."""
    if value is _MISSING:
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
        *(d.times.get(name) for name in TIME_FIELDS), d.first_seen, d.reconciled_at,
    )


@dataclass(frozen=True)
class OpenExecution:
    """A row that is not final yet, as reconciliation sees it."""

    task_id: str
    status: str
    worker: str | None
    status_at: float | None
    updated_at: float


class PgExecutionStore:
    """The sync worker's writer, and the write API issue 4 (cancel/retry) uses.

    One connection, used by one thread at a time (a lock enforces it).
    Connection failures surface as ``StoreUnavailable``; the next call
    reconnects.
    """

    def __init__(self, *, database_url: str, connect_timeout_seconds: float = 10.0,
                 statement_timeout_seconds: float = 60.0, application_name: str = "sync-worker",
                 run_migrations: bool = True) -> None:
        self._url = database_url
        self._connect_timeout = connect_timeout_seconds
        self._statement_timeout_ms = int(statement_timeout_seconds * 1000)
        self._application_name = application_name
        self._run_migrations = run_migrations
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------
    def connect(self) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return
            try:
                conn = psycopg.connect(
                    self._url, connect_timeout=max(1, int(self._connect_timeout)),
                    application_name=self._application_name, autocommit=True,
                    options=f"-c statement_timeout={self._statement_timeout_ms}",
                    keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
                if self._run_migrations:
                    migrate(conn)
                conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS sync_staging ({_STAGING_COLUMNS})"
                             " ON COMMIT DELETE ROWS")
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS sync_history_staging ("
                             "execution_id text, state text, occurred_at float8, worker text, "
                             "source text, detail jsonb) ON COMMIT DELETE ROWS")
            except psycopg.Error as exc:
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
            self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def _connection(self) -> psycopg.Connection:
        self.connect()
        assert self._conn is not None  # connect() either set it or raised
        return self._conn

    def _run(self, work: Any) -> Any:
        """Run ``work(conn)``; a connection failure closes it and raises
        StoreUnavailable (the caller retries later with backoff)."""
        with self._lock:
            conn = self._connection()
            try:
                return work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                raise StoreUnavailable(str(exc)) from exc

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):   # already broken, just let go of it
                self._conn.close()
            self._conn = None

    # -- the sync worker's batch -------------------------------------------
    def apply(self, deltas: Iterable[TaskDelta], transitions: Sequence[Transition]) -> int:
        """Merge one batch (one delta per task id) and its history; returns the
        number of rows inserted or changed."""
        rows = [_staging_row(d) for d in deltas]
        history = [(clean_text(t.task_id), t.state, t.timestamp, clean_text(t.fields.get("worker")),
                    t.source, _history_detail(t)) for t in transitions]

        def work(conn: psycopg.Connection) -> int:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY pg_temp.sync_staging ({', '.join(_STAGING_NAMES)}) "
                              "FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(_MERGE_SQL)
                changed = cur.rowcount
                if history:
                    with cur.copy("COPY pg_temp.sync_history_staging FROM STDIN") as copy:
                        for hrow in history:
                            copy.write_row(hrow)
                    cur.execute(_HISTORY_SQL)
                return int(changed)

        if not rows:
            return 0
        return int(self._run(work))

    # -- reconciliation ------------------------------------------------------
    def open_executions(self, *, after_id: str | None = None, limit: int = 1000,
                        settled_seconds: float = 0.0) -> list[OpenExecution]:
        """Rows not final yet, by id (keyset), untouched for ``settled_seconds``."""
        def work(conn: psycopg.Connection) -> list[OpenExecution]:
            cur = conn.execute(
                "SELECT execution_id, status, worker, extract(epoch FROM status_at), "
                "extract(epoch FROM updated_at) FROM automation.job_executions "
                "WHERE status IN ('pending', 'received', 'started', 'retry') "
                "AND execution_id > %s AND updated_at <= now() - make_interval(secs => %s) "
                "ORDER BY execution_id LIMIT %s", (after_id or "", settled_seconds, limit))
            return [OpenExecution(r[0], r[1], r[2], float(r[3]) if r[3] is not None else None,
                                  float(r[4])) for r in cur.fetchall()]
        return list(self._run(work))

    def known_ids(self, task_ids: Sequence[str]) -> set[str]:
        """Which of ``task_ids`` have a row (discovery inserts only the others)."""
        if not task_ids:
            return set()
        return set(self._run(lambda conn: [r[0] for r in conn.execute(
            "SELECT execution_id FROM automation.job_executions WHERE execution_id = ANY(%s)",
            (list(task_ids),))]))

    def count_open(self) -> int:
        return int(self._run(lambda conn: conn.execute(
            "SELECT count(*) FROM automation.job_executions "
            "WHERE status IN ('pending', 'received', 'started', 'retry')").fetchone()[0]))

    # -- issue 4: operator actions ------------------------------------------
    def mark_cancelled(self, task_id: str, *, at_epoch: float | None = None,
                       subject: str | None = None) -> bool:
        """Set ``status='cancelled'`` now (guarded: a finished task stays as it
        finished). Returns whether the row changed to cancelled."""
        at = time.time() if at_epoch is None else at_epoch
        transition = Transition(task_id, "REVOKED", at, "revoked",
                                {"operator": subject} if subject else {}, source="operator")
        delta = TaskDelta(task_id)
        delta.absorb(transition)
        self.apply([delta], [transition])
        row = self.get_status(task_id)
        return row == "cancelled"

    def insert_pending(self, *, task_id: str, task_name: str, args: Any, kwargs: Any,
                       args_exact: bool, queue: str | None = None,
                       routing_key: str | None = None, exchange: str | None = None,
                       retry_of: str | None = None, sent_at_epoch: float | None = None) -> None:
        """Create the row of a task the monitor just published (a retry), so it
        exists before its first event; events then merge into it."""
        at = time.time() if sent_at_epoch is None else sent_at_epoch
        fields = {"task_name": task_name, "args": args, "kwargs": kwargs,
                  "args_exact": args_exact, "queue": queue, "routing_key": routing_key,
                  "exchange": exchange}
        transition = Transition(task_id, "PENDING", at, "sent", fields, source="operator")
        delta = TaskDelta(task_id)
        delta.absorb(transition)
        self.apply([delta], [transition])
        if retry_of:
            self._run(lambda conn: conn.execute(
                "UPDATE automation.job_executions SET retry_of = %s "
                "WHERE execution_id = %s AND retry_of IS NULL", (retry_of, task_id)))

    def link_retry(self, *, original_id: str, new_id: str) -> None:
        """Record that ``new_id`` re-runs ``original_id`` (both directions).
        The original row keeps its status and history."""
        def work(conn: psycopg.Connection) -> None:
            with conn.transaction():
                conn.execute("UPDATE automation.job_executions SET retried_as = %s "
                             "WHERE execution_id = %s", (new_id, original_id))
                conn.execute("UPDATE automation.job_executions SET retry_of = %s "
                             "WHERE execution_id = %s", (original_id, new_id))
        self._run(work)

    def record_audit(self, *, subject: str, action: str, task_id: str | None, outcome: str,
                     detail: dict[str, Any] | None = None) -> int:
        """Append one operator action to ``automation.operator_audit``; returns its id."""
        return int(self._run(lambda conn: conn.execute(
            "INSERT INTO automation.operator_audit (subject, action, execution_id, outcome, "
            "detail) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (subject, action, task_id, outcome, _json(detail or {}))).fetchone()[0]))

    def get_status(self, task_id: str) -> str | None:
        row = self._run(lambda conn: conn.execute(
            "SELECT status FROM automation.job_executions WHERE execution_id = %s",
            (task_id,)).fetchone())
        return None if row is None else str(row[0])

    # -- retention -----------------------------------------------------------
    def purge_older_than(self, *, cutoff_epoch: float, batch_size: int = 1000,
                         archive: bool = False) -> int:
        """Delete (or move to ``job_executions_archive``) one batch of rows
        whose task started before the cutoff and that have not changed since.
        Returns the number of rows removed; call again until it returns 0."""
        move = ("INSERT INTO automation.job_executions_archive SELECT * FROM gone"
                if archive else "SELECT count(*) FROM gone")
        sql = f"""
            WITH victims AS (
                SELECT execution_id FROM automation.job_executions
                WHERE first_seen_at < to_timestamp(%(cutoff)s)
                  AND updated_at < to_timestamp(%(cutoff)s)
                ORDER BY first_seen_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),
            gone AS (
                DELETE FROM automation.job_executions j USING victims v
                WHERE j.execution_id = v.execution_id RETURNING j.*),
            history AS (
                DELETE FROM automation.job_execution_history h USING gone g
                WHERE h.execution_id = g.execution_id)
            {move}"""

        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                cur = conn.execute(sql, {"cutoff": cutoff_epoch, "limit": batch_size})
                if archive:
                    return int(cur.rowcount)
                row = cur.fetchone()
                return int(row[0]) if row else 0
        return int(self._run(work))


def _history_detail(t: Transition) -> str | None:
    detail = {k: t.fields[k] for k in ("error", "retries", "runtime", "operator", "reason")
              if t.fields.get(k) is not None}
    return _json(detail) if detail else None
