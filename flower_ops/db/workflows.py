"""Workflows in PostgreSQL: a workflow's task rows (the tree's records) and
the newest workflows. Blocking: call from an executor thread.

The rows carry ``workflow_id`` and ``canvas`` (migration 0004), written by
the sync worker from ``task-sent``; ``job_executions_workflow_idx`` makes
both reads index scans.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

from flower_ops.core.lifecycle import STATUS_TO_STATE, outcome_times
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTIONS, TIME_COLUMNS

MAX_NODES = 20_000

# The tree reads the canvas's ids and names (``links``, written beside it by
# the sync worker); rows written before that column have the canvas only.
# As text, decoded here by orjson: a chain's links are long (every message
# names every later step) and the stdlib's decoder is several times slower.
_TREE_CANVAS = "COALESCE(links, canvas)::text"
# what a tree node shows: no args, results or tracebacks; times as epoch seconds
_NODE_COLUMNS = ("execution_id, task_name, status, worker, queue, retries, runtime, error, "
                 "parent_id, root_id, retry_of, retried_as, workflow_id, "
                 + ", ".join(f"extract(epoch FROM {c})::float8 AS {c}"
                             for c in TIME_COLUMNS.values()))


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class PgWorkflows:
    def __init__(self, database: Database) -> None:
        self._db = database

    def _query(self, sql: str, params: Any) -> list[dict[str, Any]]:
        return self._db.rows(sql, params)

    def records(self, workflow_id: str, *, full_canvas: bool = False
                ) -> list[dict[str, Any]]:
        """Every task row of the workflow (and the row whose id it is), as
        the tree's records; ``full_canvas``: the links with their arguments."""
        canvas = "canvas" if full_canvas else f"{_TREE_CANVAS} AS canvas"
        rows = self._query(
            f"SELECT {_NODE_COLUMNS}, {canvas} FROM {EXECUTIONS} "
            f"WHERE workflow_id = %s OR execution_id = %s LIMIT {MAX_NODES}",
            (workflow_id, workflow_id))
        return [record_from_row(row) for row in rows]

    def lookup(self, some_id: str) -> tuple[str | None, tuple[Any, ...]]:
        """In one round trip: the workflow ``some_id`` names (its own, or the
        one of the task with that id) and that workflow's ``validator``."""
        rows = self._query(
            f"WITH w AS (SELECT COALESCE("
            f"(SELECT workflow_id FROM {EXECUTIONS} WHERE execution_id = %(id)s), "
            f"(SELECT %(id)s WHERE EXISTS (SELECT 1 FROM {EXECUTIONS} "
            f"WHERE workflow_id = %(id)s))) AS id) "
            f"SELECT w.id, count(e.execution_id) AS n, max(e.updated_at) AS at FROM w "
            f"LEFT JOIN {EXECUTIONS} e ON e.workflow_id = w.id OR e.execution_id = w.id "
            f"GROUP BY w.id", {"id": some_id})
        if not rows or rows[0]["id"] is None:
            return None, ()
        return str(rows[0]["id"]), (rows[0]["n"], rows[0]["at"])

    def validator(self, workflow_id: str) -> tuple[Any, ...]:
        """What changes whenever a row of the workflow does (a row's
        ``updated_at`` moves with every change; a new row adds to the count)."""
        rows = self._query(
            f"SELECT count(*) AS n, max(updated_at) AS at FROM {EXECUTIONS} "
            "WHERE workflow_id = %s OR execution_id = %s", (workflow_id, workflow_id))
        return (rows[0]["n"], rows[0]["at"])

    def newest(self, before: tuple[float, str] | None, limit: int
               ) -> list[tuple[str, float]]:
        """Workflow ids with the time their first task was seen, newest first,
        strictly before ``before`` (started, id)."""
        having = ""
        params: list[Any] = []
        if before is not None:
            having = ("HAVING (extract(epoch FROM min(first_seen_at)), workflow_id) "
                      "< (%s::float8, %s)")
            params = [before[0], before[1]]
        rows = self._query(
            f"SELECT workflow_id, min(first_seen_at) AS started FROM {EXECUTIONS} "
            f"WHERE workflow_id IS NOT NULL GROUP BY workflow_id {having} "
            f"ORDER BY started DESC, workflow_id DESC LIMIT %s", (*params, limit))
        return [(r["workflow_id"], _epoch(r["started"]) or 0.0) for r in rows]


def _decoded(canvas: Any) -> Any:
    if not isinstance(canvas, str):
        return canvas            # jsonb, already decoded (full_canvas)
    try:
        return orjson.loads(canvas)
    except orjson.JSONDecodeError:   # beyond orjson (an integer over 64 bits)
        return json.loads(canvas)


def record_from_row(row: dict[str, Any]) -> dict[str, Any]:
    state = STATUS_TO_STATE.get(row["status"], str(row["status"]).upper())
    record = {
        "id": row["execution_id"], "name": row["task_name"], "state": state,
        "worker": row["worker"], "queue": row["queue"], "retries": row["retries"],
        "runtime": row["runtime"], "exception": row["error"],
        "parent_id": row["parent_id"], "root_id": row["root_id"],
        "retry_of": row["retry_of"], "retried_as": row["retried_as"],
        "workflow_id": row["workflow_id"], "canvas": _decoded(row["canvas"]),
    }
    record.update(outcome_times(state, {name: row[column]
                                        for name, column in TIME_COLUMNS.items()}))
    return record
