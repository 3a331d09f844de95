"""The monitor's read side of the execution history in PostgreSQL.

Blocking: call it from an executor thread, never on the IOLoop. Rows become
the API's task dicts here (``source: "db"``); nothing psycopg leaks out. The
sync worker writes them (``db/batch.py``), operator actions too
(``db/actions.py``).
"""
from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import (
    STATE_TO_STATUS,
    STATUS_TO_STATE,
    in_lifecycle_order,
    outcome_times,
)
from flower_ops.core.query import TaskPage, TaskQuery
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTION_COLUMNS, EXECUTIONS, HISTORY, TIME_COLUMNS

MAX_CHILDREN = 1000

def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _encode_cursor(first_seen_us: int, task_id: str) -> str:
    raw = json.dumps([first_seen_us, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, task_id = json.loads(raw)
        if isinstance(micros, int) and not isinstance(micros, bool) and isinstance(task_id, str):
            return micros, task_id
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise InvalidQuery("invalid cursor", detail={"cursor": cursor[:100]})


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

    def _query(self, sql: str, params: Any) -> list[dict[str, Any]]:
        with self._db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS} "
                           "WHERE execution_id = %s", (task_id,))
        if not rows:
            return None
        task = task_from_row(rows[0])
        task["trace_id"] = rows[0]["trace_id"]
        history = self._query(
            "SELECT state, extract(epoch FROM occurred_at)::float8 AS ts, worker, source, "
            f"detail FROM {HISTORY} WHERE execution_id = %s "
            "ORDER BY occurred_at, id", (task_id,))
        # Read in time order; shown in lifecycle order, whatever the clocks
        # of publisher and workers said (``lifecycle.in_lifecycle_order``)
        task["history"] = in_lifecycle_order(
            [{"state": h["state"], "timestamp": h["ts"], "worker": h["worker"],
              "source": h["source"], **(h["detail"] or {})} for h in history])
        children = self._query(
            f"SELECT execution_id FROM {EXECUTIONS} WHERE parent_id = %s "
            "ORDER BY first_seen_at LIMIT %s", (task_id, MAX_CHILDREN))
        task["children"] = [c["execution_id"] for c in children]
        return task

    def list_tasks(self, query: TaskQuery) -> TaskPage:
        """Newest first by default; keyset pagination on (first_seen_at, id).

        List items carry every field of ``get_task`` but ``history`` and
        ``children``."""
        where, params = self._filters(query)
        descending = query.order != "asc"
        keyset_where = list(where)
        keyset_params = list(params)
        if query.cursor:
            micros, task_id = _decode_cursor(query.cursor)
            op = "<" if descending else ">"
            keyset_where.append(
                f"(first_seen_at, execution_id) {op} "
                "(timestamptz 'epoch' + %s * interval '1 microsecond', %s)")
            keyset_params += [micros, task_id]
        direction = "DESC" if descending else "ASC"
        limit = max(1, min(int(query.limit), 1000))
        sql = (f"SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS}"
               f"{self._where(keyset_where)} ORDER BY first_seen_at {direction}, "
               f"execution_id {direction} LIMIT %s")
        rows = self._query(sql, [*keyset_params, limit + 1])
        total_rows = self._query(
            f"SELECT count(*) AS n FROM {EXECUTIONS}{self._where(where)}", params)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = _encode_cursor(rows[-1]["first_seen_us"], rows[-1]["execution_id"]) \
            if more and rows else None
        return TaskPage(tasks=[task_from_row(r) for r in rows], total=int(total_rows[0]["n"]),
                        next=cursor, source="db")

    @staticmethod
    def _where(clauses: list[str]) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    @staticmethod
    def _filters(query: TaskQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if query.states:
            unknown = [s for s in query.states if s not in STATE_TO_STATUS]
            if unknown:
                raise InvalidQuery("unknown state", detail={"states": sorted(unknown)})
            where.append("status = ANY(%s)")
            params.append([STATE_TO_STATUS[s] for s in sorted(query.states)])
        prefix = query.name_prefix
        if prefix is not None:
            if prefix:
                where.append("task_name LIKE %s")
                params.append(_like_escaped(prefix) + "%")
        elif query.name:
            where.append("task_name = %s")
            params.append(query.name)
        for column, value in (("worker", query.worker), ("queue", query.queue)):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        if query.search:
            pattern = "%" + _like_escaped(query.search) + "%"
            where.append("(task_name ILIKE %s OR execution_id ILIKE %s OR args::text ILIKE %s "
                         "OR kwargs::text ILIKE %s OR result::text ILIKE %s "
                         "OR error ILIKE %s)")
            params += [pattern] * 6
        if query.since is not None:
            where.append("first_seen_at >= to_timestamp(%s)")
            params.append(float(query.since))
        if query.until is not None:
            where.append("first_seen_at < to_timestamp(%s)")
            params.append(float(query.until))
        return where, params


def _like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (backslash escapes)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
