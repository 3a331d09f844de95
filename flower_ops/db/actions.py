"""PostgreSQL side of operator actions: reading rows, and writing cancels,
retry links and audit records inside one transaction (no Celery here).

The schema is ``flower_ops/db`` (``automation.job_executions``, its history
and ``automation.operator_audit``). A cancel goes through the same monotonic
guard as the sync worker (``automation.status_advances``), so a task that
finished in the meantime keeps its final state, and the sync worker, applying
the ``task-revoked`` event later, finds ``cancelled`` already there and
changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from flower_ops.core.errors import Unavailable
from flower_ops.core.lifecycle import STATE_TO_STATUS, STATUS_TO_STATE
from flower_ops.db.jsonsafe import clean_text, holds_nul, jsonb_dumps
from flower_ops.db.placement import place
from flower_ops.db.pool import Database
from flower_ops.db.schema import AUDIT, EXECUTIONS, HISTORY, STATUS_ADVANCES


@dataclass(frozen=True)
class StoredTask:
    """What the actions need from one ``job_executions`` row."""

    id: str
    name: str | None
    state: str                 # Celery state name
    args: Any
    kwargs: Any
    args_exact: bool
    queue: str | None
    routing_key: str | None
    exchange: str | None
    retry_of: str | None
    retried_as: str | None


@dataclass(frozen=True)
class AuditRecord:
    subject: str
    action: str
    task_id: str | None
    outcome: str
    detail: dict[str, Any]


_GUARD = (f"{STATUS_ADVANCES}(j.status, j.status_at, j.worker_lost, "
          "'cancelled', EXCLUDED.status_at)")

_CANCEL_SQL = f"""
INSERT INTO {EXECUTIONS} AS j (
    execution_id, task_name, status, status_at, args, kwargs, args_exact, queue,
    routing_key, exchange, revoked_at, first_seen_at, first_seen_day)
VALUES (%(id)s, %(name)s, 'cancelled', to_timestamp(%(at)s), %(args)s, %(kwargs)s,
        %(exact)s, %(queue)s, %(routing_key)s, %(exchange)s, to_timestamp(%(at)s),
        to_timestamp(%(at)s), %(day)s)
ON CONFLICT (execution_id, first_seen_day) DO UPDATE SET
    status = CASE WHEN {_GUARD} THEN 'cancelled' ELSE j.status END,
    status_at = CASE WHEN {_GUARD} THEN EXCLUDED.status_at ELSE j.status_at END,
    worker_lost = CASE WHEN {_GUARD} THEN false ELSE j.worker_lost END,
    revoked_at = CASE WHEN {_GUARD} THEN COALESCE(j.revoked_at, EXCLUDED.revoked_at)
                      ELSE j.revoked_at END,
    task_name = COALESCE(j.task_name, EXCLUDED.task_name),
    queue = COALESCE(j.queue, EXCLUDED.queue),
    routing_key = COALESCE(j.routing_key, EXCLUDED.routing_key),
    exchange = COALESCE(j.exchange, EXCLUDED.exchange)
RETURNING status
"""

_RETRY_ROW_SQL = f"""
INSERT INTO {EXECUTIONS} AS j (
    execution_id, task_name, status, status_at, args, kwargs, args_exact, queue,
    routing_key, exchange, retry_of, sent_at, first_seen_at, first_seen_day)
VALUES (%(id)s, %(name)s, 'pending', to_timestamp(%(at)s), %(args)s, %(kwargs)s, %(exact)s,
        %(queue)s, %(routing_key)s, %(exchange)s, %(retry_of)s, to_timestamp(%(at)s),
        to_timestamp(%(at)s), %(day)s)
ON CONFLICT (execution_id, first_seen_day)
    DO UPDATE SET retry_of = COALESCE(j.retry_of, EXCLUDED.retry_of)
"""

# The original may be known to Flower's memory only (the sync worker has not
# written it yet): create it then, with what we know; events merge into it.
_LINK_SQL = f"""
INSERT INTO {EXECUTIONS} AS j (
    execution_id, task_name, status, status_at, args, kwargs, args_exact, queue,
    routing_key, exchange, retried_as, first_seen_at, first_seen_day)
VALUES (%(id)s, %(name)s, %(status)s, to_timestamp(%(at)s), %(args)s, %(kwargs)s, %(exact)s,
        %(queue)s, %(routing_key)s, %(exchange)s, %(new_id)s, to_timestamp(%(at)s), %(day)s)
ON CONFLICT (execution_id, first_seen_day) DO UPDATE SET retried_as = EXCLUDED.retried_as
"""

_HISTORY_SQL = f"""
INSERT INTO {HISTORY}
    (execution_id, state, occurred_at, source, detail, first_seen_day)
VALUES (%s, %s, to_timestamp(%s), 'operator', %s, %s)
ON CONFLICT (execution_id, first_seen_day, state, occurred_at) DO NOTHING
"""

_AUDIT_SQL = f"""
INSERT INTO {AUDIT} (subject, action, execution_id, outcome, detail)
VALUES (%s, %s, %s, %s, %s)
"""


def _jsonb(value: Any) -> Jsonb | None:
    # NUL spelled out: PostgreSQL's jsonb refuses U+0000 (see db/jsonsafe.py)
    return None if value is None else Jsonb(value, dumps=jsonb_dumps)


def _stored_exactly(*values: Any) -> bool:
    return not any(holds_nul(value) for value in values)


def _key(task_id: str) -> str:
    """A task id as its row has it (NUL spelled out)."""
    return clean_text(task_id) or ""


def _texts(params: dict[str, Any]) -> dict[str, Any]:
    return {key: clean_text(value) if isinstance(value, str) else value
            for key, value in params.items()}


class ActionTransaction:
    """Writes of one action, committed together or not at all."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def mark_cancelled(self, *, task_id: str, at: float, subject: str, name: str | None,
                       args: Any, kwargs: Any, args_exact: bool, queue: str | None,
                       routing_key: str | None, exchange: str | None) -> str:
        """Set the row to ``cancelled`` (guarded); returns the row's status after."""
        day = place(self.conn, [(_key(task_id), at)])[_key(task_id)]
        row = self.conn.execute(_CANCEL_SQL, _texts({
            "id": task_id, "day": day, "name": name, "at": at, "args": _jsonb(args),
            "kwargs": _jsonb(kwargs),
            "exact": args_exact and args is not None and _stored_exactly(args, kwargs),
            "queue": queue, "routing_key": routing_key, "exchange": exchange})).fetchone()
        if row is None:
            # Nothing changed (the row was already final: the unchanged-row
            # trigger skipped the update, so RETURNING is empty): say what it is
            row = self.conn.execute(f"SELECT status FROM {EXECUTIONS} WHERE execution_id = %s",
                                    (clean_text(task_id),)).fetchone()
        status = str(row[0]) if row else "cancelled"
        if status == "cancelled":
            self.conn.execute(_HISTORY_SQL, (task_id, "REVOKED", at,
                                             _jsonb({"operator": subject, "action": "cancel"}),
                                             day))
        return status

    def record_retry(self, *, original_id: str, original_state: str, new_id: str, at: float,
                     subject: str, name: str, args: Any, kwargs: Any, queue: str | None,
                     routing_key: str | None, exchange: str | None) -> None:
        params = _texts({"name": name, "at": at, "args": _jsonb(args), "kwargs": _jsonb(kwargs),
                         "exact": _stored_exactly(args, kwargs), "queue": queue,
                         "routing_key": routing_key, "exchange": exchange})
        days = place(self.conn, [(_key(original_id), at), (_key(new_id), at)])
        new_day = days[_key(new_id)]
        self.conn.execute(_RETRY_ROW_SQL, {**params, "id": new_id, "retry_of": original_id,
                                           "day": new_day})
        self.conn.execute(_HISTORY_SQL, (new_id, "PENDING", at, _jsonb(
            {"operator": subject, "action": "retry", "retry_of": original_id}), new_day))
        status = STATE_TO_STATUS.get(original_state, "failure")
        self.conn.execute(_LINK_SQL, {**params, "id": original_id, "status": status,
                                      "new_id": new_id,
                                      "day": days[_key(original_id)]})

    def audit(self, records: Sequence[AuditRecord]) -> None:
        if records:
            with self.conn.cursor() as cur:
                cur.executemany(_AUDIT_SQL, [
                    (clean_text(r.subject), r.action, r.task_id, r.outcome, _jsonb(r.detail))
                    for r in records])


class ActionStore:
    """Reads and writes of operator actions, on the process's one pool
    (blocking: call it through the monitor's executor). A database that cannot
    be reached raises ``Unavailable``; so does one that refuses a write (the
    action is then not done, and the answer says why)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        with self._db.connection() as conn:
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise  # the pool's to report: "database unavailable"
            except psycopg.Error as exc:
                # e.g. a value PostgreSQL's jsonb refuses (NUL in a string)
                raise Unavailable("database error", {"reason": str(exc)[:300]}) from exc

    @contextmanager
    def transaction(self) -> Iterator[ActionTransaction]:
        """Everything written through the yielded object commits when the
        block ends normally and rolls back when it raises."""
        with self._connection() as conn, conn.transaction():
            yield ActionTransaction(conn)

    def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers (an action checks
        before it sends anything it could not then record)."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    def rows(self, task_ids: Sequence[str]) -> dict[str, StoredTask]:
        if not task_ids:
            return {}
        with self._connection() as conn:
            cur = conn.execute(
                "SELECT execution_id, task_name, status, args, kwargs, args_exact, queue, "
                "routing_key, exchange, retry_of, retried_as "
                f"FROM {EXECUTIONS} WHERE execution_id = ANY(%s)",
                (list(task_ids),))
            return {r[0]: StoredTask(id=r[0], name=r[1], state=STATUS_TO_STATE.get(r[2], "PENDING"),
                                     args=r[3], kwargs=r[4], args_exact=bool(r[5]), queue=r[6],
                                     routing_key=r[7], exchange=r[8], retry_of=r[9],
                                     retried_as=r[10])
                    for r in cur.fetchall()}

    def audit(self, records: Sequence[AuditRecord]) -> None:
        if records:
            with self.transaction() as tx:
                tx.audit(records)

    def audit_entries(self, *, task_id: str | None = None, subject: str | None = None,
                      action: str | None = None, before_id: int | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; ``before_id`` pages on."""
        with self._connection() as conn:
            cur = conn.execute(
                "SELECT id, extract(epoch FROM occurred_at), subject, action, execution_id, "
                f"outcome, detail FROM {AUDIT} "
                "WHERE (%(task)s::text IS NULL OR execution_id = %(task)s) "
                "AND (%(subject)s::text IS NULL OR subject = %(subject)s) "
                "AND (%(action)s::text IS NULL OR action = %(action)s) "
                "AND (%(before)s::bigint IS NULL OR id < %(before)s) "
                "ORDER BY id DESC LIMIT %(limit)s",
                {"task": task_id, "subject": subject, "action": action, "before": before_id,
                 "limit": limit})
            return [{"id": r[0], "timestamp": float(r[1]), "subject": r[2], "action": r[3],
                     "task_id": r[4], "outcome": r[5], "detail": r[6]}
                    for r in cur.fetchall()]
