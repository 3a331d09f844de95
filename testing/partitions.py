"""History as it was before partitioning (schema version 4, rows in it), and
what the partitioned tables hold, read straight from PostgreSQL: the
partition migration's tests and ``bench/bench_history.py``.

Rows are generated server-side (``INSERT ... SELECT generate_series``).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import psycopg

from flower_ops.db.migrate import migrate

STATES = ("pending", "started", "success", "failure")


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


def midday_epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()


def fill_unpartitioned(database_url: str, *, tasks: int, days: int, prefix: str = "old-",
                       status: str = "started") -> None:
    """Schema version 4 (today's unpartitioned tables) with ``tasks`` rows
    spread evenly over the ``days`` days before today (UTC), each with
    PENDING and STARTED history rows."""
    migrate(database_url, up_to=4)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO automation.job_executions (execution_id, task_name, status, status_at, "
            "args, kwargs, worker, queue, sent_at, started_at, first_seen_at) "
            "SELECT %(prefix)s || g, 'automation.add', %(status)s, t + interval '1 second', "
            "jsonb_build_array(g, 1), '{}', 'w1', 'celery', t, t + interval '1 second', t "
            "FROM generate_series(0, %(n)s - 1) g, LATERAL (SELECT %(start)s::timestamptz "
            "+ (g %% %(days)s) * interval '1 day' + (g / %(days)s) * interval '1 second' AS t) x",
            {"prefix": prefix, "status": status, "n": tasks, "days": days,
             "start": datetime.combine(today_utc() - timedelta(days=days), datetime.min.time(),
                                       timezone.utc) + timedelta(hours=1)})
        conn.execute(
            "INSERT INTO automation.job_execution_history (execution_id, state, occurred_at, "
            "worker) SELECT execution_id, s.state, sent_at + s.after, 'w1' "
            "FROM automation.job_executions, (VALUES ('PENDING', interval '0'), "
            "('STARTED', interval '1 second')) s(state, after)")


def partition_names(database_url: str, table: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT name FROM automation.partition_days(%s::regclass) ORDER BY from_day",
            (table,))]


def fill_days(conn: psycopg.Connection, *, first_day: date, days: int, per_day: int,
              history: bool = True, partitioned: bool = True) -> None:
    """``per_day`` rows (3 of 4 finished; 3 history rows each) in each of
    ``days`` days from ``first_day``; their partitions must exist. One
    statement per day, so each day's partition is written once, in order.
    ``partitioned`` False: into schema version 4's tables (a baseline)."""
    day_column = ", first_seen_day" if partitioned else ""
    for n in range(days):
        day = first_day + timedelta(days=n)
        start = midday_epoch(day) - 12 * 3600
        conn.execute(
            "INSERT INTO automation.job_executions (execution_id, task_name, status, status_at, "
            "args, kwargs, worker, queue, sent_at, started_at, succeeded_at, failed_at, runtime, "
            f"first_seen_at{day_column}, created_at, updated_at) "
            "SELECT md5(%(day)s || g), 'automation.task' || (g %% 20), "
            "(ARRAY['success', 'failure', 'success', 'started'])[1 + g %% 4], t, "
            "jsonb_build_array(g), '{}', 'w' || (g %% 8), 'celery', t, t, "
            "CASE WHEN g %% 4 IN (0, 2) THEN t END, CASE WHEN g %% 4 = 1 THEN t END, 0.5, "
            f"t{', %(day)s::date' if partitioned else ''}, t, t "
            "FROM generate_series(0, %(n)s - 1) g, "
            "LATERAL (SELECT to_timestamp(%(start)s + g * 86400.0 / %(n)s) AS t) x",
            {"day": day.isoformat(), "n": per_day, "start": start})
        if history:
            conn.execute(
                "INSERT INTO automation.job_execution_history (execution_id, state, occurred_at, "
                f"worker{day_column}) SELECT execution_id, s.state, first_seen_at + s.after, "
                f"worker{day_column} FROM automation.job_executions, (VALUES "
                "('PENDING', interval '0'), ('STARTED', interval '1 ms'), "
                "('SUCCESS', interval '2 ms')) s(state, after) "
                "WHERE first_seen_at >= to_timestamp(%s) AND first_seen_at < to_timestamp(%s)",
                (start, start + 86400))
