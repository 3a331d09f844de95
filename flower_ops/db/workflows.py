"""Workflows in PostgreSQL: a workflow's task rows (the tree's records) and
the newest workflows. Blocking: call from an executor thread.

The rows carry ``workflow_id`` and ``canvas`` (migration 0004), written by
the sync worker from ``task-sent``; ``job_executions_workflow_idx`` makes
both reads index scans.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from flower_ops.core.lifecycle import STATUS_TO_STATE, outcome_times
from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTIONS, TIME_COLUMNS

MAX_NODES = 20_000

def _links(key: str, *fields: str) -> str:
    """A list of signatures cut to what the tree shows: name (and id)."""
    ident = ", 'options', jsonb_build_object('task_id', e->'options'->'task_id')" \
        if "id" in fields else ""
    return (f"(SELECT jsonb_agg(jsonb_build_object('task', e->'task'{ident})) "
            f"FROM jsonb_array_elements(canvas->'{key}') e)")


# The tree reads links as names and ids only: a chain's messages repeat every
# later step with its arguments (a chain of 100: a megabyte of canvas), which
# only a resume needs (``full_canvas``).
_TREE_CANVAS = (
    "CASE WHEN canvas IS NULL THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object("
    "'group', canvas->'group', 'group_index', canvas->'group_index', "
    "'resumes', canvas->'resumes', 'exact', canvas->'exact', "
    f"'chain', {_links('chain', 'id')}, "
    "'chord', CASE WHEN canvas ? 'chord' THEN jsonb_build_object('task', "
    "canvas->'chord'->'task', 'options', jsonb_build_object('task_id', "
    "canvas->'chord'->'options'->'task_id')) END, "
    f"'callbacks', {_links('callbacks')}, 'errbacks', {_links('errbacks')})) END")
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
        with self._db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

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

    def validator(self, workflow_id: str) -> tuple[Any, ...]:
        """What changes whenever a row of the workflow does (a row's
        ``updated_at`` moves with every change; a new row adds to the count)."""
        rows = self._query(
            f"SELECT count(*) AS n, max(updated_at) AS at FROM {EXECUTIONS} "
            "WHERE workflow_id = %s OR execution_id = %s", (workflow_id, workflow_id))
        return (rows[0]["n"], rows[0]["at"])

    def exists(self, workflow_id: str) -> bool:
        """Is ``workflow_id`` a workflow's id (a group's, with no row of its own)?"""
        return bool(self._query(f"SELECT 1 FROM {EXECUTIONS} WHERE workflow_id = %s LIMIT 1",
                                (workflow_id,)))

    def workflow_of(self, task_id: str) -> str | None:
        rows = self._query(f"SELECT workflow_id FROM {EXECUTIONS} WHERE execution_id = %s",
                           (task_id,))
        return rows[0]["workflow_id"] if rows else None

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


def record_from_row(row: dict[str, Any]) -> dict[str, Any]:
    state = STATUS_TO_STATE.get(row["status"], str(row["status"]).upper())
    record = {
        "id": row["execution_id"], "name": row["task_name"], "state": state,
        "worker": row["worker"], "queue": row["queue"], "retries": row["retries"],
        "runtime": row["runtime"], "exception": row["error"],
        "parent_id": row["parent_id"], "root_id": row["root_id"],
        "retry_of": row["retry_of"], "retried_as": row["retried_as"],
        "workflow_id": row["workflow_id"], "canvas": row["canvas"],
    }
    record.update(outcome_times(state, {name: row[column]
                                        for name, column in TIME_COLUMNS.items()}))
    return record
