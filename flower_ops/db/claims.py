"""One operator action on a task at a time, across every monitor on the
database: a transaction-level advisory lock per (action, task), taken before
anything is sent and held until the action's transaction ends (after the
broker accepted the message). The second of two monitors acting on the same
task at once waits, then reads what the first did, and does not do it again.

The lock does not depend on the task's row existing (a task only Flower's
memory knows has none yet) nor on how the tables are partitioned.
"""
from __future__ import annotations

from collections.abc import Iterable

import psycopg

from flower_ops.db.jsonsafe import clean_text
from flower_ops.db.schema import AUDIT, EXECUTIONS


def lock_tasks(conn: psycopg.Connection, action: str, task_ids: Iterable[str]) -> None:
    """Lock (action, task) for each of ``task_ids`` until the transaction ends
    (in a fixed order, so two bulk actions cannot deadlock)."""
    for task_id in sorted(set(task_ids)):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (f"flower-ops:{action}:{clean_text(task_id)}",))


def retried_as(conn: psycopg.Connection, task_id: str) -> str | None:
    """The id ``task_id`` was last retried as, as committed (or written by this
    transaction)."""
    row = conn.execute(f"SELECT retried_as FROM {EXECUTIONS} WHERE execution_id = %s "
                       "AND retried_as IS NOT NULL LIMIT 1", (clean_text(task_id),)).fetchone()
    return str(row[0]) if row else None


def cancelled_by_operator(conn: psycopg.Connection, task_id: str) -> bool:
    """Whether an operator's cancel of ``task_id`` is already on record."""
    row = conn.execute(f"SELECT 1 FROM {AUDIT} WHERE execution_id = %s AND action = 'cancel' "
                       "AND outcome = 'cancelled' LIMIT 1", (clean_text(task_id),)).fetchone()
    return row is not None
