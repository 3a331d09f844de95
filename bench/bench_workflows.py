"""Benchmark: GET /workflows/{root_id} for a big chord and a long chain, from
Flower's memory and from PostgreSQL, against what an operator has without us.

The issue's target: a chord of 1,000 members and a chain of 100 steps, p99 <
50 ms from memory and from PostgreSQL, over real HTTP.

Everything is real: a Redis db claimed the way the test suite claims one, a
scratch PostgreSQL database, and ``testing.stack.Stack``'s processes — a
Celery worker (``-c 2``, events on), the monitor (``celery -A
testing.apps.automation flower-ops``, production refresh intervals) and the
sync worker. This process publishes, through the instrumented automation app,

    chord([step.s(i, 1) for i in range(MEMBERS)], collect.s())
    chain(step.s(0, 1), *[step.s(1) for _ in range(STEPS - 1)])

so every ``task-sent`` event carries ``flower_ops_workflow`` and
``flower_ops_canvas`` exactly as ``instrument()`` makes them (the chain's
later steps and the chord's body are published by the worker). The monitor's
Flower state and the sync worker's ``automation.job_executions`` rows are
filled from the same event stream; the bench waits until both sources answer
every node in its final state.

Then one keep-alive ``http.client`` connection asks, interleaved request by
request (after a warm-up), for

* ours: ``/workflows/{root_id}?source=memory`` and ``?source=db`` for each
  workflow — the four judged cases (p99 < 50 ms);
* baseline: Flower's ``GET /api/tasks`` on the same monitor (every task in
  memory: Flower has no workflow view, so a client fetches them all and
  filters by ``root_id``; that filter finds a chain's steps but not a chord's
  members, each of which is its own root);
* floor: our ``/tasks/{id}`` for the workflow's root task, one task's detail.

The monitor keeps an encoded tree while nothing of its workflow changes
(memory's change count, PostgreSQL's row count and latest ``updated_at``), so
the judged requests of a finished workflow are answered from it after one
validation. While the chord runs the bench also asks for it over and over
(both sources); those answers are built again for most requests, and their
figures are printed (not judged) as the cost of a tree that changes.

The load average is printed at the start and the end; the processes, the
Redis db and the scratch database are cleaned up even on failure. Exit 1
when a target is missed, 2 when the run itself fails (an HTTP error, a
workflow that never completes).

    .venv/bin/python bench/bench_workflows.py --members 1000 --steps 100 --requests 200
"""
# ruff: noqa: T201  (a benchmark reports on stdout)
from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import check_line, heading, ms, percentile, ratio

API = "/api/automation/monitoring"
TARGET_P99_S = 0.050
SOURCES = ("memory", "db")


# -- services and processes ---------------------------------------------------------


@dataclass
class Services:
    redis_url: str
    database_url: str


@contextlib.contextmanager
def scratch_services() -> Iterator[Services]:
    """A claimed, flushed Redis db and a new PostgreSQL database, given back
    and dropped afterwards (the machine's servers, else embedded ones)."""
    import redis

    from testing.services import start_postgres, start_redis

    redis_service = start_redis()
    pg_service = start_postgres()
    db = redis_service.claim_db()
    dbname = pg_service.create_database()
    client = redis.Redis.from_url(redis_service.url(db))
    try:
        client.flushdb()
        print(f"  services: Redis {redis_service.kind} db {db}, PostgreSQL "
              f"{pg_service.kind} database {dbname} (scratch)")
        yield Services(redis_url=redis_service.url(db), database_url=pg_service.url(dbname))
    finally:
        with contextlib.ExitStack() as cleanup:
            if redis_service.embedded is not None:
                cleanup.callback(redis_service.embedded.cleanup)
            if pg_service.embedded is not None:
                cleanup.callback(pg_service.embedded.cleanup)
            cleanup.callback(redis_service.release_db, db)
            cleanup.callback(client.close)
            cleanup.callback(client.flushdb)
            cleanup.callback(pg_service.drop_database, dbname)


# -- HTTP -----------------------------------------------------------------------------


class Client:
    """One keep-alive connection; the round trip of each GET."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str, headers: dict[str, str]) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        return time.perf_counter() - start, response.status, body

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    headers: dict[str, str]
    kind: str = ""     # a judged case's workflow
    source: str = ""   # and source

    @property
    def short(self) -> str:
        return f"{self.kind}, source={self.source}"


@dataclass
class Figures:
    samples_s: list[float]
    body_bytes: int

    def at(self, q: float) -> float:
        return percentile(self.samples_s, q)


def measure(client: Client, cases: list[Case], *, requests: int, warmup: int
            ) -> dict[str, Figures]:
    """Interleave the cases request by request (order reversed every other
    round) so noise hits them alike."""
    samples: dict[str, list[float]] = {c.label: [] for c in cases}
    sizes: dict[str, int] = {}
    for i in range(warmup + requests):
        for case in cases if i % 2 == 0 else reversed(cases):
            elapsed, status, body = client.get(case.path, case.headers)
            if status != 200:
                raise RuntimeError(f"{case.label}: HTTP {status}: {body[:2000]!r}")
            if i >= warmup:
                samples[case.label].append(elapsed)
                sizes[case.label] = len(body)
    return {label: Figures(values, sizes[label]) for label, values in samples.items()}


def wait_workflow(client: Client, headers: dict[str, str], some_id: str, source: str,
                  total: int, *, timeout_seconds: float) -> dict[str, Any]:
    """Until ``source`` answers the workflow of ``some_id`` with ``total``
    nodes, every one final; that answer."""
    from testing.waiting import wait_for

    last: dict[str, Any] = {}

    def complete() -> dict[str, Any] | None:
        _, status, body = client.get(f"{API}/workflows/{some_id}?source={source}", headers)
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"workflow {some_id} source={source}: HTTP {status}: "
                               f"{body[:2000]!r}")
        tree = json.loads(body)
        last.update(state=tree["state"], counts=tree["counts"])
        done = tree["counts"]["total"] == total and tree["state"] == "succeeded"
        return tree if done else None

    try:
        return wait_for(complete, timeout_seconds=timeout_seconds, interval_seconds=0.5,
                        message=f"workflow {some_id} complete in source={source}")
    except AssertionError as exc:
        raise RuntimeError(f"{exc}; last answer {last}") from None


# -- the workflows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workflow:
    kind: str
    label: str
    handle_id: str   # a task id of the workflow, as the publisher knows it
    total: int       # nodes the finished tree has


def publish_and_run(app: Any, *, members: int, steps: int, timeout_seconds: float,
                    while_running: Any = None) -> list[Workflow]:
    """Publish both, wait for both results; ``while_running(group_id)`` is
    called over and over while the chord runs (the live measurement), until
    it says the monitor sees it ended (asking the result backend instead
    leaves pub/sub subscriptions that complain at interpreter exit)."""
    from celery import chain, chord

    from testing.apps import automation

    t = time.perf_counter()
    chord_result = chord([automation.step.s(i, 1) for i in range(members)],
                         automation.collect.s()).apply_async()
    chain_result = chain(automation.step.s(0, 1),
                         *[automation.step.s(1) for _ in range(steps - 1)]).apply_async()
    published = time.perf_counter() - t
    if while_running is not None:
        deadline = time.monotonic() + timeout_seconds
        # the group's id: PostgreSQL knows it from the first member's row
        while time.monotonic() < deadline and while_running(chord_result.parent.id):
            time.sleep(0.05)
    collected = chord_result.get(timeout=timeout_seconds)
    total = chain_result.get(timeout=timeout_seconds)
    ran = time.perf_counter() - t
    if len(collected) != members or total != steps:
        raise RuntimeError(f"wrong results: chord collected {len(collected)}, chain {total}")
    print(f"  published in {published:.2f} s; both ran to the end in {ran:.1f} s "
          f"(chord body got {len(collected):,} results, chain total {total})")
    workflows = [Workflow("chord", f"chord of {members:,} members", chord_result.id,
                          members + 1),
                 Workflow("chain", f"chain of {steps:,} steps", chain_result.id, steps)]
    # Celery's results unsubscribe from the backend's pub/sub when collected;
    # collected at interpreter exit, Redis is gone and each prints a traceback
    del chord_result, chain_result
    gc.collect()
    return workflows


# -- the report ---------------------------------------------------------------------------


def line(label: str, f: Figures) -> str:
    return (f"  {label:<58} n={len(f.samples_s):<4d} median {ms(f.at(50)):>10}  "
            f"p95 {ms(f.at(95)):>10}  p99 {ms(f.at(99)):>10}  max {ms(max(f.samples_s)):>10}"
            f"  body {f.body_bytes:>9,} B")


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def root_id_filter(flower_body: bytes, roots: dict[str, tuple[str, int]]) -> list[str]:
    """What a client filtering Flower's /api/tasks by root_id would find."""
    tasks = json.loads(flower_body)
    out = []
    for kind, (root_task_id, total) in roots.items():
        found = sum(1 for t in tasks.values() if t.get("root_id") == root_task_id)
        out.append(f"{kind}: {found:,} of {total:,} tasks")
    return out


def run(args: argparse.Namespace) -> int:
    from testing.settings import FAST_SYNC_WORKER
    from testing.stack import Stack

    with scratch_services() as services:
        # production refresh intervals on the monitor: nothing extra on its IOLoop
        stack = Stack(broker_url=services.redis_url, database_url=services.database_url,
                      monitor_env={}, sync_env=FAST_SYNC_WORKER, concurrency=args.concurrency)
        client: Client | None = None
        completed = False
        try:
            t = time.perf_counter()
            stack.start()
            print(f"  worker (-c {args.concurrency}), monitor (port {stack.monitor.port}) and "
                  f"sync worker ready in {time.perf_counter() - t:.1f} s")
            ours = {"Authorization": f"Bearer {stack.token}"}
            client = Client(stack.monitor.port)
            live: dict[str, list[float]] = {source: [] for source in SOURCES}

            def while_running(group_id: str) -> bool:
                # a running workflow changes between looks: its tree is built
                # again (not the kept answer) for most of these requests
                assert client is not None
                running = True
                for source in SOURCES:
                    elapsed, status, body = client.get(
                        f"{API}/workflows/{group_id}?source={source}", ours)
                    if status == 200:
                        live[source].append(elapsed)
                        if source == "memory":
                            running = json.loads(body)["state"] == "running"
                return running

            workflows = publish_and_run(stack.app, members=args.members, steps=args.steps,
                                        timeout_seconds=args.run_timeout_seconds,
                                        while_running=while_running)
            for source, samples in live.items():
                if samples:
                    print(line(f"while the chord runs (tree rebuilt), source={source}",
                               Figures(samples, 0)))
            user, password = stack.monitor.basic_auth or ("", "")
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            flower = {"Authorization": f"Basic {basic}"}

            t = time.perf_counter()
            roots: dict[str, str] = {}
            root_tasks: dict[str, str] = {}
            for wf in workflows:
                for source in SOURCES:
                    tree = wait_workflow(client, ours, wf.handle_id, source, wf.total,
                                         timeout_seconds=args.run_timeout_seconds)
                    if roots.setdefault(wf.kind, tree["root_id"]) != tree["root_id"]:
                        raise RuntimeError(f"{wf.kind}: memory says root {roots[wf.kind]}, "
                                           f"db says {tree['root_id']}")
                    root_tasks.setdefault(wf.kind, tree["nodes"][0]["task_id"])
                    print(f"  {wf.label}: source={source} answers root {tree['root_id']}, "
                          f"kind {tree['kind']}, {tree['counts']['total']:,} nodes "
                          f"{tree['counts']['by_state']}, {len(tree['edges']):,} edges "
                          f"(source {tree['source']})")
            print(f"  memory and PostgreSQL complete {time.perf_counter() - t:.1f} s after "
                  f"the last result")

            cases = [Case(f"ours   /workflows/{{root}}  {wf.label}, source={source}",
                          f"{API}/workflows/{roots[wf.kind]}?source={source}", ours,
                          kind=wf.label, source=source)
                     for wf in workflows for source in SOURCES]
            baseline = Case("Flower /api/tasks (every task; client filters by root_id)",
                            "/api/tasks", flower)
            floors = {wf.label: Case(f"ours   /tasks/{{id}}  {wf.kind}'s root task "
                                     "(one-task floor)",
                                     f"{API}/tasks/{root_tasks[wf.kind]}", ours)
                      for wf in workflows}
            print(heading(f"GET, one keep-alive connection, {args.warmup} warm-up + "
                          f"{args.requests} measured each, interleaved"))
            figures = measure(client, [*cases, baseline, *floors.values()],
                              requests=args.requests,
                              warmup=args.warmup)
            _, _, flower_body = client.get(baseline.path, flower)
            for label, f in figures.items():
                print(line(label, f))
            found = root_id_filter(flower_body, {
                wf.kind: (root_tasks[wf.kind], wf.total) for wf in workflows})
            print(f"  Flower's /api/tasks holds {len(json.loads(flower_body)):,} tasks; "
                  f"filtering it by the root task's root_id finds {'; '.join(found)}")

            print(heading("ratios (median round trip)"))
            base = figures[baseline.label]
            for case in cases:
                f = figures[case.label]
                floor = figures[floors[case.kind].label]
                print(f"  {case.short:<44} "
                      f"Flower /api/tasks / ours {ratio(base.at(50), f.at(50)):6.1f}x   "
                      f"ours / one-task detail {ratio(f.at(50), floor.at(50)):6.1f}x")

            print(heading(f"targets: p99 < {TARGET_P99_S * 1000:.0f} ms (round trip)"))
            verdicts = []
            for case in cases:
                p99 = figures[case.label].at(99)
                passed = p99 < TARGET_P99_S
                verdicts.append(passed)
                print(check_line(case.short, ms(p99),
                                 f"< {TARGET_P99_S * 1000:.0f} ms", passed, width=46))
            ok = all(verdicts)
            completed = True
            worst = max(figures[c.label].at(99) for c in cases)
            print(f"\nsummary: {'PASS' if ok else 'FAIL'} ({sum(verdicts)}/{len(verdicts)} "
                  f"cases); worst p99 {ms(worst)}; Flower /api/tasks median "
                  f"{ms(base.at(50))}")
            return 0 if ok else 1
        finally:
            if client is not None:
                client.close()
            stack.stop()
            for process in stack.processes():
                if completed and not args.keep_logs:
                    process.log.unlink(missing_ok=True)
                else:
                    print(f"  log: {process.log}")


def _quiet_result_teardown() -> None:
    """Celery's ``AsyncResult.__del__`` unsubscribes from the result backend;
    for results still alive at interpreter exit that fails ("Python is likely
    shutting down") and prints a traceback that is not the bench's. Only
    that one is silenced."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if "AsyncResult.__del__" not in repr(unraisable.object):
            default(unraisable)

    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    _quiet_result_teardown()
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--members", type=int, default=1000, help="the chord's header size")
    parser.add_argument("--steps", type=int, default=100, help="the chain's length")
    parser.add_argument("--requests", type=int, default=200,
                        help="measured requests per case")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per case")
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's processes")
    parser.add_argument("--run-timeout-seconds", type=float, default=300.0,
                        help="for the workflows to run, and for both sources to hold them")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs (always kept when the run fails)")
    args = parser.parse_args(argv)
    if args.members < 2 or args.steps < 2 or args.requests < 1 or args.warmup < 0:
        parser.error("need --members >= 2, --steps >= 2, --requests >= 1, --warmup >= 0")
    import platform

    print(f"bench_workflows: chord of {args.members:,} members, chain of {args.steps:,} "
          f"steps, {args.requests} requests per case; python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average at start {loadavg()}")
    started = time.perf_counter()
    try:
        return run(args)
    except Exception:  # noqa: BLE001 - the run failed, as opposed to missing a target
        traceback.print_exc()
        print("summary: ERROR (the run failed; see above)")
        return 2
    finally:
        print(f"  run took {time.perf_counter() - started:.0f} s; load average at end "
              f"{loadavg()}")


if __name__ == "__main__":
    sys.exit(main())
