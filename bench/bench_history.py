"""Benchmark: partitioned history at scale, against today's unpartitioned
tables (schema version 4) holding the same rows, side by side in one run.

    .venv/bin/python bench/bench_history.py                        # full size
    .venv/bin/python bench/bench_history.py --rows 1000000 \\
        --retention-rows 200000                                    # scaled down

PostgreSQL is the machine's (``--pg-admin-url``), in two scratch databases
(dropped at the end unless ``--keep``); rows are generated server-side
(INSERT ... SELECT generate_series, a day at a time).

Phases:
1. reads: ``GET /tasks/{id}`` (``PgHistory.get_task``: the row, its history,
   its children) and ``GET /tasks?source=db`` with a state or a name filter
   (``PgHistory.list_tasks``: the keyset page and its total), first page and
   at a cursor 1 million rows deep (or half the filtered rows when fewer);
   targets p99 < 10 ms and < 50 ms; the baseline runs today's SQL (exact
   ``count(*)`` totals) on the unpartitioned tables. The keyset plan must
   walk the partitions' indexes (Merge Append), checked with EXPLAIN.
2. retention: one day of ``--retention-rows`` rows (3 history rows each)
   leaves: DETACH + DROP of its partitions, vs today's batched delete of the
   same rows (1000 a transaction, until a batch comes back short).
3. merge: batches of 2000 task deltas (half updates of random existing rows,
   half new tasks) through the sync worker's merge, with the look-up of
   each row's day across every partition, vs the unpartitioned
   schema's merge (``flower_ops/db/batch.py`` at commit ``BASELINE_COMMIT``, from git) on the unpartitioned tables.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg

from bench.common import LatencySummary, check_line, environment_line, heading, ms, ratio
from flower_ops.core.query import TaskQuery, encode_position
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.history import PgHistory
from flower_ops.db.migrate import migrate
from flower_ops.db.partitions import create_partition, ensure_ahead
from flower_ops.db.pool import Database
from flower_ops.db.retention import Retention
from testing.partitions import fill_days, midday_epoch, today_utc

EXEC = "automation.job_executions"
HIST = "automation.job_execution_history"
WARM_UP = 20
COLUMNS = ("execution_id, task_name, status, status_at, worker_lost, args, kwargs, args_exact, "
           "result, error, traceback, worker, queue, routing_key, exchange, retries, retry_of, "
           "retried_as, parent_id, root_id, eta, expires, runtime, trace_id, workflow_id, "
           "canvas, first_seen_at, updated_at, (extract(epoch FROM first_seen_at) * 1000000)"
           "::bigint AS first_seen_us")
# The unpartitioned schema's last commit (before #14): its merge is phase 3's
# baseline, read from git
BASELINE_COMMIT = "08c7687"

# the unpartitioned schema's retention statement, the baseline of phase 2
BATCHED_DELETE = f"""
WITH victims AS (SELECT execution_id FROM {EXEC} WHERE first_seen_at < to_timestamp(%(c)s)
      AND updated_at < to_timestamp(%(c)s) ORDER BY first_seen_at LIMIT 1000
      FOR UPDATE SKIP LOCKED),
gone AS (DELETE FROM {EXEC} j USING victims v WHERE j.execution_id = v.execution_id
         RETURNING j.execution_id),
history AS (DELETE FROM {HIST} h USING gone g WHERE h.execution_id = g.execution_id)
SELECT count(*) FROM gone"""


def task_id(day: Any, g: int) -> str:
    return hashlib.md5(f"{day.isoformat()}{g}".encode(), usedforsecurity=False).hexdigest()


def timed(fn: Callable[[], Any], samples: int) -> LatencySummary:
    for _ in range(WARM_UP):             # a running monitor's state: statements prepared
        fn()
    took = []
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t0)
    return LatencySummary.of(took)


class Baseline:
    """The unpartitioned schema's reads, as ``db/history.py`` and ``db/listing.py`` ran them at ``BASELINE_COMMIT``."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def get_task(self, tid: str) -> None:
        c = self.conn
        c.execute(f"SELECT {COLUMNS} FROM {EXEC} WHERE execution_id = %s", (tid,)).fetchall()
        c.execute("SELECT state, extract(epoch FROM occurred_at)::float8, worker, source, detail "
                  f"FROM {HIST} WHERE execution_id = %s ORDER BY occurred_at, id",
                  (tid,)).fetchall()
        c.execute(f"SELECT execution_id FROM {EXEC} WHERE parent_id = %s ORDER BY first_seen_at "
                  "LIMIT 1000", (tid,)).fetchall()

    def page(self, where: str, value: str, cursor: tuple[int, str] | None) -> None:
        keyset, params = "", [value]
        if cursor:
            keyset = (" AND (first_seen_at, execution_id) < (timestamptz 'epoch' + %s * "
                      "interval '1 microsecond', %s)")
            params += [cursor[0], cursor[1]]
        self.conn.execute(f"SELECT {COLUMNS} FROM {EXEC} WHERE {where}{keyset} ORDER BY "
                          "first_seen_at DESC, execution_id DESC LIMIT 51", params).fetchall()
        self.conn.execute(f"SELECT count(*) FROM {EXEC} WHERE {where}", (value,)).fetchone()


def deep_cursor(url: str, where: str, value: str, depth: int) -> tuple[tuple[int, str], int]:
    with psycopg.connect(url) as conn:
        total = conn.execute(f"SELECT count(*) FROM {EXEC} WHERE {where}", (value,)).fetchone()
        depth = min(depth, int(total[0]) // 2) if total else 0
        row = conn.execute(
            "SELECT (extract(epoch FROM first_seen_at) * 1000000)::bigint, execution_id "
            f"FROM {EXEC} WHERE {where} ORDER BY first_seen_at DESC, execution_id DESC "
            "OFFSET %s LIMIT 1", (value, depth)).fetchone()
    assert row is not None
    return (int(row[0]), str(row[1])), depth


def plan_nodes(url: str, where: str, value: str, cursor: tuple[int, str]) -> list[str]:
    with psycopg.connect(url) as conn:
        plan = conn.execute(
            f"EXPLAIN (FORMAT JSON) SELECT * FROM {EXEC} WHERE {where} AND (first_seen_at, "
            "execution_id) < (timestamptz 'epoch' + %s * interval '1 microsecond', %s) "
            "ORDER BY first_seen_at DESC, execution_id DESC LIMIT 51",
            (value, cursor[0], cursor[1])).fetchone()[0][0]["Plan"]  # type: ignore[index]
    nodes, node = [], plan
    while node:
        nodes.append(node["Node Type"])
        children = node.get("Plans") or []
        node = children[0] if children else None
    return nodes


def head_batch_module() -> ModuleType | None:
    """``flower_ops/db/batch.py`` at ``BASELINE_COMMIT`` (the unpartitioned merge), from git."""
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:flower_ops/db/batch.py"], cwd=ROOT,  # noqa: S607
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "head_batch.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("head_batch", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["head_batch"] = module
    spec.loader.exec_module(module)
    return module


class BaselineDb:
    """One connection with the baseline's staging tables, as its pool lent them
    (today's ``Database`` would migrate the baseline to partitions)."""

    def __init__(self, url: str, head: ModuleType) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        head.create_staging_tables(self.conn)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        yield self.conn


def merge_batches(store: Any, first_day: Any, days: int, per_day: int, batches: int,
                  seed: int, recent: bool) -> LatencySummary:
    """``recent``: the updates are of the tasks the batch before created (a
    steady stream); else of random rows of every day (the worst case)."""
    rng = random.Random(seed)
    now = time.time()
    took = []
    for b in range(batches + 1):
        events = []
        for i in range(1000):
            if recent and b:
                events.append(Transition(f"new-{seed}-{b - 1}-{i}", "SUCCESS", now + 1,
                                         "succeeded", {"result": 1}))
                continue
            day = first_day + timedelta(days=rng.randrange(days))
            events.append(Transition(task_id(day, rng.randrange(per_day)), "SUCCESS",
                                     midday_epoch(day) + 3600, "succeeded", {"result": 1}))
        events += [Transition(f"new-{seed}-{b}-{i}", "PENDING", now, "sent",
                              {"task_name": "automation.task1"}) for i in range(1000)]
        deltas = list(fold(events).values())
        t0 = time.perf_counter()
        store.apply(deltas, events)
        if b:                              # the first one warms up
            took.append(time.perf_counter() - t0)
    return LatencySummary.of(took)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="task rows in history")
    parser.add_argument("--days", type=int, default=30, help="daily partitions they fill")
    parser.add_argument("--retention-rows", type=int, default=1_000_000,
                        help="rows of the day retention removes")
    parser.add_argument("--samples", type=int, default=300, help="requests per read figure")
    parser.add_argument("--merge-batches", type=int, default=20)
    parser.add_argument("--no-history", action="store_true", help="no history rows")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument("--reuse", metavar="ID", help="the databases a --keep run left "
                        "(bench_history_*_ID), as they are: no fill (implies --keep)")
    parser.add_argument("--phases", default="reads,retention,merge")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    run_id = args.reuse or str(os.getpid())
    args.keep = args.keep or bool(args.reuse)
    names = {kind: f"bench_history_{kind}_{run_id}" for kind in ("parted", "base")}
    base_of = args.pg_admin_url.rsplit("/", 1)[0]
    urls = {kind: f"{base_of}/{name}" for kind, name in names.items()}
    if not args.reuse:
        with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'CREATE DATABASE "{name}"')
    print(f"  databases: {', '.join(names.values())}")
    print(heading(f"history: {args.rows:,} rows over {args.days} daily partitions "
                  f"(+ {args.retention_rows:,} for retention)"))
    print(" ", environment_line())
    today, per_day = today_utc(), args.rows // args.days
    first_day = today - timedelta(days=args.days)
    old_day = first_day - timedelta(days=10)
    database = batch_database(urls["parted"], application_name="bench-history")
    reader = Database(url=urls["parted"], application_name="bench-history-reader")
    ok = True
    try:
        t0 = time.monotonic()
        database.open()
        migrate(urls["base"], up_to=4)
        for kind in () if args.reuse else ("parted", "base"):
            with psycopg.connect(urls[kind], autocommit=True) as conn:
                if kind == "parted":
                    for day in (old_day, *(first_day + timedelta(days=n)
                                           for n in range(args.days))):
                        create_partition(conn, day, 1)
                    ensure_ahead(conn, days_ahead=7, partition_days=1)
                fill_days(conn, first_day=first_day, days=args.days, per_day=per_day,
                          history=not args.no_history, partitioned=kind == "parted")
                fill_days(conn, first_day=old_day, days=1, per_day=args.retention_rows,
                          history=not args.no_history, partitioned=kind == "parted")
                conn.execute("VACUUM ANALYZE")
            print(f"  filled {kind}: {time.monotonic() - t0:.0f} s")

        if "reads" in phases:
            print(heading("1. reads (PgHistory, as the API's handlers call it)"))
            history, base = PgHistory(reader), Baseline(urls["base"])
            rng = random.Random(1)
            sample = [task_id(first_day + timedelta(days=rng.randrange(args.days)),
                              rng.randrange(per_day)) for _ in range(args.samples + 1)]
            picks = iter(sample * 4)
            got = timed(lambda: history.get_task(next(picks)), args.samples)
            was = timed(lambda: base.get_task(next(picks)), args.samples)
            print(got.line("GET /tasks/{id} partitioned"))
            print(was.line("GET /tasks/{id} unpartitioned (baseline)"))
            ok &= got.p99_s < 0.010
            print(check_line("GET /tasks/{id} p99", ms(got.p99_s), "< 10 ms", got.p99_s < 0.010),
                  f" ratio {ratio(got.p99_s, was.p99_s):.2f}x baseline")
            filters = {"state=FAILURE": ("status = %s", "failure",
                                         TaskQuery(states=frozenset({"FAILURE"}), limit=50)),
                       "name=automation.task7": ("task_name = %s", "automation.task7",
                                                 TaskQuery(name="automation.task7", limit=50))}
            for label, (where, value, query) in filters.items():
                cursor, depth = deep_cursor(urls["parted"], where, value, 1_000_000)
                base_cursor, _ = deep_cursor(urls["base"], where, value, depth)
                nodes = plan_nodes(urls["parted"], where, value, cursor)
                walks = "Merge Append" in nodes and "Sort" not in nodes[:3]
                shape = " > ".join(nodes[:4])
                verdict = "ok" if walks else "NOT"
                print(f"  plan ({label}, deep): {shape}  [{verdict} an index walk]")
                ok &= walks
                for at, q, bc in (("first page", query, None),
                                  (f"cursor {depth:,} deep", TaskQuery(
                                      states=query.states, name=query.name, limit=50,
                                      cursor=encode_position(cursor)), base_cursor)):
                    page = history.list_tasks(q)
                    got = timed(lambda q=q: history.list_tasks(q), args.samples)
                    was = timed(lambda bc=bc, w=where, v=value: base.page(w, v, bc), args.samples)
                    print(got.line(f"GET /tasks {label}, {at}"), f"total {page.total:,}"
                          f"{' (estimated)' if page.extra.get('total_estimated') else ''}")
                    print(was.line("  unpartitioned, exact count (baseline)"))
                    ok &= got.p99_s < 0.050
                    print(check_line(f"{label}, {at} p99", ms(got.p99_s), "< 50 ms",
                                     got.p99_s < 0.050),
                          f" ratio {ratio(got.p99_s, was.p99_s):.3f}x baseline")

        if "retention" in phases:
            print(heading(f"2. retention: one day of {args.retention_rows:,} rows"))
            cutoff = midday_epoch(first_day) - 86400
            t0 = time.perf_counter()
            report = Retention(database).retire_partitions(cutoff_epoch=cutoff)
            dropped = time.perf_counter() - t0
            t0 = time.perf_counter()
            removed = 0
            with psycopg.connect(urls["base"], autocommit=True) as conn:
                while True:
                    row = conn.execute(BATCHED_DELETE, {"c": cutoff}).fetchone()
                    removed += int(row[0]) if row else 0
                    if not row or row[0] < 1000:
                        break
            deleted = time.perf_counter() - t0
            print(f"  partitions: {', '.join(r.name for r in report.retired)} "
                  f"(about {report.rows_estimate:,} tasks) in {dropped * 1000:.0f} ms")
            print(f"  baseline batched delete: {removed:,} tasks in {deleted:.1f} s")
            ok &= dropped < 1.0 and report.rows_estimate > 0
            print(check_line("drop one day", f"{dropped * 1000:.0f} ms", "< 1 s", dropped < 1.0),
                  f" ratio {ratio(dropped, deleted):.5f}x baseline ({ratio(deleted, dropped):.0f}"
                  " times faster)")

        if "merge" in phases:
            print(heading("3. merge: 2000-delta batches, 1000 new tasks + 1000 updates"))
            head = head_batch_module()
            base_db = BaselineDb(urls["base"], head) if head else None
            store = PgExecutionStore(database)
            for seed, (label, recent) in enumerate((("updates of the batch before", True),
                                                    ("updates of random old rows", False))):
                got = merge_batches(store, first_day, args.days, per_day, args.merge_batches,
                                    10 + seed, recent)
                print(got.line(f"{label}: partitioned, day look-up", width=56))
                if head is None or base_db is None:
                    print("  baseline skipped: the baseline commit's batch.py is not readable with git")
                    continue
                was = merge_batches(head.PgExecutionStore(base_db), first_day, args.days,
                                    per_day, args.merge_batches, 20 + seed, recent)
                print(was.line(f"{label}: unpartitioned, today's merge", width=56))
                print(f"  ratio median {ratio(got.median_s, was.median_s):.2f}x, "
                      f"p99 {ratio(got.p99_s, was.p99_s):.2f}x baseline")
    finally:
        reader.close()
        database.close()
        if not args.keep:
            with psycopg.connect(args.pg_admin_url, autocommit=True) as admin:
                for name in names.values():
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(heading("verdict"))
    print(f"  {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
