"""The monitor's read side of the execution history in PostgreSQL.

Blocking: call it from an executor thread, never on the IOLoop. Rows become
the API's task dicts here (``source: "db"``); nothing psycopg leaks out. The
sync worker writes them (``db/batch.py``), operator actions too
(``db/actions.py``).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from flower_ops.core.lifecycle import (
    STATUS_TO_STATE,
    in_lifecycle_order,
    outcome_times,
)
from flower_ops.core.query import TaskPage, TaskQuery, encode_position
from flower_ops.db.listing import TaskListing
from flower_ops.db.partitions import EPOCH_DAY
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTION_COLUMNS, EXECUTIONS, HISTORY, TIME_COLUMNS

MAX_CHILDREN = 1000

def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def task_from_row(row: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = {
        "id": row["execution_id"],
        "name": row["task_name"],
        "state": STATUS_TO_STATE.get(row["status"], row["status"].upper()),
        "args": row["args"],
        "kwargs": row["kwargs"],
        "args_exact": bool(row["args_exact"]),
        "result": row["result"],
        "exception": row["error"],
        "traceback": row["traceback"],
        "worker": row["worker"],
        "queue": row["queue"],
        "routing_key": row["routing_key"],
        "exchange": row["exchange"],
        "retries": row["retries"],
        "runtime": row["runtime"],
        "parent_id": row["parent_id"],
        "root_id": row["root_id"],
        "workflow_id": row["workflow_id"],
        "retry_of": row["retry_of"],
        "retried_as": row["retried_as"],
        "eta": _epoch(row["eta"]),
        "expires": _epoch(row["expires"]),
        "timestamp": _epoch(row["status_at"]) or _epoch(row["first_seen_at"]),
        "worker_lost": bool(row["worker_lost"]),
        "updated": _epoch(row["updated_at"]),
        "source": "db",
    }
    task.update(outcome_times(task["state"], {name: _epoch(row[column])
                                              for name, column in TIME_COLUMNS.items()}))
    return task


class PgHistory:
    """Task rows and their history, as the API shows them."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self.listing = TaskListing(database.connection)

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        # One connection for the three reads (one checkout from the pool).
        # Planning a look-up by id or parent over every partition (30+ of
        # them) costs 15-40 ms, running it about 1 ms: those two are prepared
        # on the connection and run with their generic plan, planned once per
        # connection. The history read names its day: planned each time, it
        # reads one partition (0.3 ms); its generic plan would read them all.
        with self._db.connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as cur:
            mode = ["auto"]

            def query(sql: str, params: Any, *, generic: bool = True) -> list[dict[str, Any]]:
                # the setting applies to unnamed statements too: say it each time it changes
                wanted = "force_generic_plan" if generic else "force_custom_plan"
                if mode[0] != wanted:
                    cur.execute(f"SET LOCAL plan_cache_mode = {wanted}")
                    mode[0] = wanted
                cur.execute(sql, params, prepare=generic)
                return cur.fetchall()

            return self._task(query, task_id)

    def _task(self, query: Any, task_id: str) -> dict[str, Any] | None:
        rows = query(f"SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS} "
                     "WHERE execution_id = %s", (task_id,))
        if not rows:
            return None
        task = task_from_row(rows[0])
        task["trace_id"] = rows[0]["trace_id"]
        # its task's partition, and the legacy one while the mover empties it
        # (a transition written meanwhile in both is shown once)
        history = query(
            "SELECT state, ts, worker, source, detail FROM ("
            "SELECT DISTINCT ON (occurred_at, state) state, occurred_at, id, "
            "extract(epoch FROM occurred_at)::float8 AS ts, worker, source, detail "
            f"FROM {HISTORY} WHERE execution_id = %s AND first_seen_day = ANY(%s) "
            "ORDER BY occurred_at, state, first_seen_day DESC) h ORDER BY occurred_at, id",
            (task_id, [rows[0]["first_seen_day"], EPOCH_DAY]), generic=False)
        # Read in time order; shown in lifecycle order, whatever the clocks
        # of publisher and workers said (``lifecycle.in_lifecycle_order``)
        task["history"] = in_lifecycle_order(
            [{"state": h["state"], "timestamp": h["ts"], "worker": h["worker"],
              "source": h["source"], **(h["detail"] or {})} for h in history])
        # a child is first seen after its parent: the partitions from the
        # parent's day (a day earlier: clocks of publishers differ) only, and
        # the legacy one while the partition migration empties it
        children = query(
            f"SELECT execution_id FROM {EXECUTIONS} WHERE parent_id = %s "
            "AND (first_seen_day >= %s OR first_seen_day = %s) "
            "ORDER BY first_seen_at LIMIT %s",
            (task_id, rows[0]["first_seen_day"] - timedelta(days=1), EPOCH_DAY, MAX_CHILDREN))
        task["children"] = [c["execution_id"] for c in children]
        return task

    def list_tasks(self, query: TaskQuery) -> TaskPage:
        """Newest first by default; keyset pagination on (first_seen_at, id),
        after ``query.cursor`` or, ``backward``, before it (``listing.py``).

        List items carry every field of ``get_task`` but ``history`` and
        ``children``."""
        page = self.listing.page(query)
        return TaskPage(tasks=[task_from_row(r) for r in page.rows], total=page.total,
                        extra={"total_estimated": page.total_estimated},
                        next=row_position(page.rows[-1]) if page.more_after and page.rows
                        else None,
                        prev=row_position(page.rows[0]) if page.more_before and page.rows
                        else None, source="db")


def row_position(row: dict[str, Any]) -> str:
    """The cursor of ``row``'s place in a listing."""
    return encode_position((row["first_seen_us"], row["execution_id"]))
