"""Per-minute and per-name figures of finished tasks, from PostgreSQL.

Blocking: call it from an executor thread, never on the IOLoop. A task
finished when it reached SUCCESS (``succeeded_at``) or FAILURE
(``failed_at``); runtimes are the stored ``runtime`` column (seconds).
Percentiles are ``percentile_disc`` (a runtime that was observed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flower_ops.db.pool import Database
from flower_ops.db.schema import EXECUTIONS

# when a finished row finished, and the rows finished in [%(since)s, %(until)s)
_FINISHED = ("CASE WHEN status = 'success' THEN succeeded_at ELSE failed_at END")
# (first_seen_at bounds the scan of the status index; an hour of slack for a
# publisher whose clock is ahead of the workers')
_WINDOW = (f"status IN ('success', 'failure') AND {_FINISHED} >= to_timestamp(%(since)s) "
           f"AND {_FINISHED} < to_timestamp(%(until)s) "
           "AND first_seen_at < to_timestamp(%(until)s) + interval '1 hour'")
_MINUTE = f"date_trunc('minute', {_FINISHED} AT TIME ZONE 'UTC')"
MAX_NAMES = 10_000


def _epoch_utc(value: datetime) -> float:
    """A ``timestamp`` (no zone) that says UTC, as epoch seconds."""
    return value.replace(tzinfo=timezone.utc).timestamp()


@dataclass
class MinuteFigures:
    """What PostgreSQL knows about the minutes of a range (epoch minute numbers)."""

    completed: dict[int, int] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)
    # name -> minute -> (p50, p95)
    runtime: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    # runs per name over the range (for the names whose runtimes were read)
    runs: dict[str, int] = field(default_factory=dict)


class PgInsights:
    def __init__(self, database: Database) -> None:
        self._db = database

    def _query(self, sql: str, params: Any) -> list[dict[str, Any]]:
        return self._db.rows(sql, params)

    def minutes(self, since: float, until: float, names: list[str] | None,
                top: int) -> MinuteFigures:
        """Completed / failed per minute in [since, until), and the runtime
        p50 / p95 per minute of ``names`` (or of the ``top`` names by runs)."""
        params: dict[str, Any] = {"since": since, "until": until, "names": names, "top": top}
        figures = MinuteFigures()
        for row in self._query(
                f"SELECT {_MINUTE} AS minute, "
                "count(*) FILTER (WHERE status = 'success') AS completed, "
                "count(*) FILTER (WHERE status = 'failure') AS failed "
                f"FROM {EXECUTIONS} WHERE {_WINDOW} GROUP BY 1", params):
            minute = int(_epoch_utc(row["minute"]) // 60)
            figures.completed[minute] = int(row["completed"])
            figures.failed[minute] = int(row["failed"])
        chosen = ("task_name = ANY(%(names)s)" if names is not None else
                  f"task_name IN (SELECT task_name FROM {EXECUTIONS} WHERE {_WINDOW} "
                  "AND task_name IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 "
                  "LIMIT %(top)s)")
        for row in self._query(
                f"SELECT {_MINUTE} AS minute, task_name, count(*) AS runs, "
                "percentile_disc(0.5) WITHIN GROUP (ORDER BY runtime) AS p50, "
                "percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime) AS p95 "
                f"FROM {EXECUTIONS} WHERE {_WINDOW} AND {chosen} GROUP BY 1, 2", params):
            name = row["task_name"]
            figures.runs[name] = figures.runs.get(name, 0) + int(row["runs"])
            if row["p50"] is not None:
                minute = int(_epoch_utc(row["minute"]) // 60)
                figures.runtime.setdefault(name, {})[minute] = (float(row["p50"]),
                                                                float(row["p95"]))
        return figures

    def names(self, since: float, until: float) -> list[dict[str, Any]]:
        """Per task name finished in [since, until): runs, succeeded, failed,
        runtime p50 / p95 / p99 and the last failure (id, epoch, exception)."""
        params = {"since": since, "until": until}
        rows = self._query(
            "SELECT task_name, count(*) AS runs, "
            "count(*) FILTER (WHERE status = 'success') AS succeeded, "
            "count(*) FILTER (WHERE status = 'failure') AS failed, "
            "percentile_disc(0.5) WITHIN GROUP (ORDER BY runtime) AS p50, "
            "percentile_disc(0.95) WITHIN GROUP (ORDER BY runtime) AS p95, "
            "percentile_disc(0.99) WITHIN GROUP (ORDER BY runtime) AS p99 "
            f"FROM {EXECUTIONS} WHERE {_WINDOW} AND task_name IS NOT NULL "
            f"GROUP BY 1 ORDER BY runs DESC, 1 LIMIT {MAX_NAMES}", params)
        failures = {row["task_name"]: row for row in self._query(
            "SELECT DISTINCT ON (task_name) task_name, execution_id, "
            "extract(epoch FROM failed_at)::float8 AS at, error "
            f"FROM {EXECUTIONS} WHERE {_WINDOW} AND status = 'failure' "
            "AND task_name IS NOT NULL ORDER BY task_name, failed_at DESC, execution_id",
            params)}
        out = []
        for row in rows:
            failure = failures.get(row["task_name"])
            out.append({
                "name": row["task_name"], "runs": int(row["runs"]),
                "succeeded": int(row["succeeded"]), "failed": int(row["failed"]),
                "p50": row["p50"], "p95": row["p95"], "p99": row["p99"],
                "last_failure": None if failure is None else {
                    "id": failure["execution_id"], "at": failure["at"],
                    "exception": failure["error"]},
            })
        return out
