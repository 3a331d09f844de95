"""The capture stream and the history it becomes, as tests and benchmarks
read them: each task's recorded states, the consumer group's consumers."""
from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import redis

from testing.waiting import wait_for

STREAM_KEY = "flower_ops:events"
GROUP = "flower-ops-sync"
LIFECYCLE = frozenset({"PENDING", "RECEIVED", "STARTED", "SUCCESS"})
"""Every transition of a task that succeeds at once."""


def history_states(database_url: str, ids: list[str]) -> dict[str, frozenset[str]]:
    """``{execution_id: states in its history}`` for ``ids`` (missing: no
    history; {} before the sync worker created the schema)."""
    with psycopg.connect(database_url) as conn:
        try:
            rows = conn.execute("SELECT execution_id, array_agg(state) FROM "
                                "automation.job_execution_history WHERE execution_id = "
                                "ANY(%s) GROUP BY execution_id", (ids,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {str(r[0]): frozenset(r[1]) for r in rows}


def wait_history_complete(database_url: str, ids: list[str], *,
                          states: frozenset[str] = LIFECYCLE,
                          timeout_seconds: float = 60.0) -> None:
    """Until every one of ``ids`` has every one of ``states`` in its history;
    on timeout the ``AssertionError`` counts what is missing."""
    def complete() -> bool:
        got = history_states(database_url, ids)
        return len(got) == len(ids) and all(states <= s for s in got.values())

    try:
        wait_for(complete, timeout_seconds=timeout_seconds, interval_seconds=0.3,
                 message=f"history of {len(ids)} tasks")
    except AssertionError:
        got = history_states(database_url, ids)
        missing = Counter(state for i in ids for state in states - got.get(i, frozenset()))
        raise AssertionError(f"tasks with history {len(got)}/{len(ids)}; missing transitions "
                             f"{dict(missing)}") from None


def consumers(redis_url: str, *, key: str = STREAM_KEY, group: str = GROUP
              ) -> dict[str, dict[str, Any]]:
    """``{consumer name: XINFO CONSUMERS fields}`` of the group ({} before it exists)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return {c["name"].decode(): c for c in client.xinfo_consumers(key, group)}
    except redis.ResponseError:
        return {}
    finally:
        client.close()
