"""What the sync worker and the actions wrote: ``automation.job_executions``
rows and ``automation.operator_audit`` entries, read straight from PostgreSQL."""
from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg

from testing.waiting import wait_for


def statuses(database_url: str, ids: list[str] | None = None) -> dict[str, str]:
    """``{execution_id: status}`` of the rows for ``ids`` (every row when None)."""
    with psycopg.connect(database_url) as conn:
        if ids is None:
            rows = conn.execute("SELECT execution_id, status FROM automation.job_executions")
        else:
            rows = conn.execute("SELECT execution_id, status FROM automation.job_executions "
                                "WHERE execution_id = ANY(%s)", (ids,))
        return dict(rows.fetchall())


def wait_all(database_url: str, ids: list[str], status: str, *,
             timeout_seconds: float = 60.0) -> None:
    """Until every one of ``ids`` has a row in ``status``; on timeout the
    ``AssertionError`` counts the rows by status."""
    def done() -> bool:
        got = statuses(database_url, ids)
        return len(got) == len(ids) and all(v == status for v in got.values())

    try:
        wait_for(done, timeout_seconds=timeout_seconds, interval_seconds=0.3,
                 message=f"{len(ids)} rows {status}")
    except AssertionError:
        got = statuses(database_url, ids)
        raise AssertionError(f"rows: {len(got)}/{len(ids)} {dict(Counter(got.values()))}"
                             ) from None


def wait_statuses(database_url: str, want: dict[str, str], *,
                  timeout_seconds: float = 60.0) -> None:
    """Until each row of ``want``'s ids has its status; on timeout the
    ``AssertionError`` names every id that differs, with what it has."""
    ids = list(want)
    try:
        wait_for(lambda: statuses(database_url, ids) == want, timeout_seconds=timeout_seconds,
                 interval_seconds=0.3, message=f"{len(ids)} rows in their statuses")
    except AssertionError:
        got = statuses(database_url, ids)
        off = {i: f"{got.get(i, 'no row')} (want {s})" for i, s in want.items()
               if got.get(i) != s}
        raise AssertionError(f"rows not in their statuses after {timeout_seconds}s: {off}"
                             ) from None


def execution_row(database_url: str, task_id: str) -> dict[str, Any] | None:
    """The whole row of ``task_id`` as ``{column: value}``, or None."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute("SELECT * FROM automation.job_executions WHERE execution_id = %s",
                           (task_id,))
        values = cur.fetchone()
        if values is None:
            return None
        return dict(zip([c.name for c in cur.description or ()], values, strict=True))


def wait_status(database_url: str, task_id: str, status: str, *,
                timeout_seconds: float = 30.0) -> dict[str, Any]:
    """Until the row of ``task_id`` is in ``status``; that row."""
    def reached() -> dict[str, Any] | None:
        row = execution_row(database_url, task_id)
        return row if row is not None and row["status"] == status else None

    return wait_for(reached, timeout_seconds=timeout_seconds, interval_seconds=0.2,
                    message=f"row {task_id} status {status}")


def audit_entries(database_url: str, task_id: str) -> list[tuple[str, str, str]]:
    """``(subject, action, outcome)`` of every audit entry about ``task_id``, oldest first."""
    with psycopg.connect(database_url) as conn:
        return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
            "SELECT subject, action, outcome FROM automation.operator_audit "
            "WHERE execution_id = %s ORDER BY id", (task_id,)).fetchall()]
