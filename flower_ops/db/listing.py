"""Task listings from PostgreSQL: the filters, keyset pages in both
directions, counts per state, and the one-snapshot read ``source=all`` makes.

Blocking: call it from an executor thread, never on the IOLoop. Rows are
ordered by ``(first_seen_at, execution_id)``; a cursor is that pair
(``core.query.encode_position``).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import FINAL_STATES, STATE_TO_STATUS, STATUS_TO_STATE
from flower_ops.core.query import TaskQuery, decode_position
from flower_ops.db.schema import EXECUTION_COLUMNS, EXECUTIONS

MAX_LIMIT = 1000
# A listing's total is counted exactly up to this many rows; past it, it is
# the planner's estimate and the answer says so (``total_estimated``): an
# exact count of millions of rows cannot be had in a page's time. Estimates
# are kept ``ESTIMATE_SECONDS`` per filter (planning a query over every
# partition costs milliseconds; the page's own queries are prepared once).
EXACT_TOTAL_CAP = 1000
ESTIMATE_SECONDS = 30.0
Query = Callable[[str, Any], list[dict[str, Any]]]


@dataclass
class RowPage:
    """One page of rows, in listing order."""

    rows: list[dict[str, Any]]
    total: int
    more_before: bool     # rows come before the first one
    more_after: bool      # rows come after the last one
    total_estimated: bool = False   # ``total`` is the planner's estimate


@dataclass
class Snapshot:
    """What ``source=all`` read in one snapshot.

    ``stored``: of the memory tasks asked about, those with a row: id →
    (state, first seen in microseconds). ``differing``: those PostgreSQL has
    no row for, or a state memory has moved past: memory answers for them
    and they are left out of ``page`` and ``counts``."""

    stored: dict[str, tuple[str, int]]
    differing: set[str]
    page: RowPage | None = None
    counts: dict[str, int] = field(default_factory=dict)


def agrees(memory_state: str, stored_state: str) -> bool:
    """PostgreSQL's row says what memory says: the same state, or a final
    state memory missed (the sync worker's reconciliation saw the end)."""
    return memory_state == stored_state or (
        stored_state in FINAL_STATES and memory_state not in FINAL_STATES)


def where_sql(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def filters(query: TaskQuery, *, states: bool = True) -> tuple[list[str], list[Any]]:
    """``query``'s filters as SQL clauses and their parameters (``states``:
    with its state filter; counts per state go without)."""
    where: list[str] = []
    params: list[Any] = []
    if query.states and states:
        unknown = [s for s in query.states if s not in STATE_TO_STATUS]
        if unknown:
            raise InvalidQuery("unknown state", detail={"states": sorted(unknown)})
        where.append("status = ANY(%s)")
        params.append([STATE_TO_STATUS[s] for s in sorted(query.states)])
    prefix = query.name_prefix
    if prefix is not None:
        if prefix:
            where.append("task_name LIKE %s")
            params.append(like_escaped(prefix) + "%")
    elif query.name:
        where.append("task_name = %s")
        params.append(query.name)
    for column, value in (("worker", query.worker), ("queue", query.queue)):
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    if query.search:
        pattern = "%" + like_escaped(query.search) + "%"
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


def like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (backslash escapes)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def walks_descending(query: TaskQuery) -> bool:
    """The direction rows are read in: the listing's, or against it for a
    page before a cursor (``backward``)."""
    descending = query.order != "asc"
    return descending != (query.backward and query.cursor is not None)


class Estimates:
    """Row estimates per filter, kept a while (per process and database)."""

    def __init__(self, seconds: float = ESTIMATE_SECONDS) -> None:
        self._seconds = seconds
        self._kept: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def get(self, run: Query, sql: str, params: list[Any]) -> int:
        key = repr((sql, params))
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and now - kept[0] < self._seconds:
            return kept[1]
        plan = run(f"EXPLAIN (FORMAT JSON) {sql}", params)
        estimate = int(next(iter(plan[0].values()))[0]["Plan"]["Plan Rows"])
        with self._lock:
            if len(self._kept) > 1000:
                self._kept.clear()
            self._kept[key] = (now, estimate)
        return estimate


def page_rows(run: Query, query: TaskQuery, where: list[str], params: list[Any],
              estimates: Estimates | None = None) -> RowPage:
    """One keyset page of the rows ``where`` selects: after ``query.cursor``,
    or before it when ``query.backward``."""
    keyset_where = list(where)
    keyset_params = list(params)
    walk_desc = walks_descending(query)
    if query.cursor:
        micros, task_id = decode_position(query.cursor)
        keyset_where.append(
            f"(first_seen_at, execution_id) {'<' if walk_desc else '>'} "
            "(timestamptz 'epoch' + %s * interval '1 microsecond', %s)")
        keyset_params += [micros, task_id]
    direction = "DESC" if walk_desc else "ASC"
    limit = max(1, min(int(query.limit), MAX_LIMIT))
    rows = run(f"SELECT {EXECUTION_COLUMNS} FROM {EXECUTIONS}{where_sql(keyset_where)} "
               f"ORDER BY first_seen_at {direction}, execution_id {direction} LIMIT %s",
               [*keyset_params, limit + 1])
    total, estimated = count_rows(run, where, params, estimates=estimates)
    more = len(rows) > limit
    rows = rows[:limit]
    backward = query.backward and query.cursor is not None
    if backward:
        rows.reverse()
    return RowPage(rows=rows, total=total, total_estimated=estimated,
                   more_before=more if backward else query.cursor is not None,
                   more_after=True if backward else more)


def count_rows(run: Query, where: list[str], params: list[Any], cap: int = EXACT_TOTAL_CAP,
               estimates: Estimates | None = None) -> tuple[int, bool]:
    """(rows ``where`` selects, whether that is an estimate): exact up to
    ``cap``, else the planner's estimate (never below ``cap`` + 1, which
    are known to be there)."""
    found = run(f"SELECT count(*) AS n FROM (SELECT 1 FROM {EXECUTIONS}{where_sql(where)} "
                "LIMIT %s) s", [*params, cap + 1])
    exact = int(found[0]["n"])
    if exact <= cap:
        return exact, False
    estimate = (estimates or Estimates(0.0)).get(
        run, f"SELECT 1 FROM {EXECUTIONS}{where_sql(where)}", params)
    return max(estimate, cap + 1), True


class StateCounts(dict[str, int]):
    """Rows per state; ``estimated``: the states whose count is the planner's
    estimate (more than ``EXACT_TOTAL_CAP`` rows), the others exact."""

    estimated: frozenset[str] = frozenset()


def counts_by_state(run: Query, where: list[str], params: list[Any],
                    estimates: Estimates | None = None) -> StateCounts:
    """Rows per state (every state PostgreSQL has one of) for ``where``.

    With no filter (the console's first view) per status: exact up to the
    cap, else the planner's estimate, as a listing's total is (a GROUP BY of
    every row takes seconds at millions of rows). With filters, one exact
    GROUP BY: the planner's estimate of a combination assumes the columns
    independent and can be far off (a name that never fails), and counting a
    state the filter has few of walks the filter's rows anyway."""
    counts, estimated = StateCounts(), set()
    if where:
        rows = run(f"SELECT status, count(*) AS n FROM {EXECUTIONS}{where_sql(where)} "
                   "GROUP BY status", params)
        counts.update({STATUS_TO_STATE.get(r["status"], r["status"].upper()): int(r["n"])
                       for r in rows})
        return counts
    for status, state in STATUS_TO_STATE.items():
        n, about = count_rows(run, [*where, "status = %s"], [*params, status],
                              estimates=estimates)
        if n:
            counts[state] = n
            if about:
                estimated.add(state)
    counts.estimated = frozenset(estimated)
    return counts


class TaskListing:
    """``GET /tasks`` and ``GET /tasks/counts`` over ``automation.job_executions``."""

    def __init__(self, connection: Callable[[], Any]) -> None:
        self._connection = connection       # Database.connection
        self._estimates = Estimates()

    def _run(self, sql: str, params: Any) -> list[dict[str, Any]]:
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def page(self, query: TaskQuery) -> RowPage:
        where, params = filters(query)
        # one connection for the page and its total (one checkout)
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            def run(sql: str, params: Any) -> list[dict[str, Any]]:
                cur.execute(sql, params)
                return cur.fetchall()

            return page_rows(run, query, where, params, self._estimates)

    def counts(self, query: TaskQuery) -> dict[str, int]:
        where, params = filters(query, states=False)
        return counts_by_state(self._run, where, params, self._estimates)

    def snapshot(self, query: TaskQuery, memory: Mapping[str, str],
                 counts: bool = False) -> Snapshot:
        """For ``source=all``, in one read-only snapshot: which of the
        ``memory`` tasks (id → memory's state) PostgreSQL agrees with, then
        the page (or, with ``counts``, the counts per state) of the rows
        that match ``query``, those it does not agree with left out."""
        with self._connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def run(sql: str, params: Any) -> list[dict[str, Any]]:
                cur.execute(sql, params)
                return cur.fetchall()

            stored: dict[str, tuple[str, int]] = {}
            if memory:
                for row in run("SELECT execution_id, status, (extract(epoch FROM first_seen_at)"
                               f" * 1000000)::bigint AS us FROM {EXECUTIONS} "
                               "WHERE execution_id = ANY(%s)", (list(memory),)):
                    stored[row["execution_id"]] = (
                        STATUS_TO_STATE.get(row["status"], row["status"].upper()), row["us"])
            differing = {task_id for task_id, state in memory.items()
                         if task_id not in stored or not agrees(state, stored[task_id][0])}
            where, params = filters(query, states=not counts)
            if differing:
                where.append("NOT (execution_id = ANY(%s))")
                params.append(sorted(differing))
            snapshot = Snapshot(stored=stored, differing=differing)
            if counts:
                snapshot.counts = counts_by_state(run, where, params, self._estimates)
            else:
                snapshot.page = page_rows(run, query, where, params, self._estimates)
            return snapshot

