"""Benchmark: the health monitor's cost on the IOLoop with many running tasks.

One Flower ``EventsState`` filled with ``bench_api``'s workload (100,000 tasks by
default, 8 % of them ``STARTED`` long ago on 4 workers, so nearly all are stuck),
``flower_ops.install()`` applied, its timers never started. Then, on this
thread (standing in for the IOLoop):

1. ``HealthMonitor.evaluate()`` once (the first tick raises every alert), then
   ``--ticks`` more, each after the traffic of one second: fresh heartbeats and
   ``--churn`` tasks that start and finish (a few of them long-stuck ones).
2. ``ops.stats.stats()`` (what ``GET /stats`` serializes) and the health
   summary (``GET /alerts``) with the alerts active.
3. Transitions, each one tick: a worker announces its shutdown (its running
   tasks become orphaned), then comes back (orphans resolved, stuck again).

Prints figures only; for a before/after, run it on a checkout of the old
commit and on the new one.

    .venv/bin/python bench/bench_health.py --tasks 100000 --ticks 60
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import random
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_api import WORKERS, _heartbeats, build_flower, build_workload
from celery.events import Event
from common import LatencySummary, check_line, environment_line, heading, ms
from tornado.ioloop import IOLoop

import flower_ops

TARGET_MEDIAN_S = 0.002
TARGET_P99_S = 0.020
TARGET_STATS_S = 0.005


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def churn(state: Any, rng: random.Random, count: int, stuck_ids: list[str]) -> None:
    """One second of traffic: ``count`` short tasks run to completion, and one
    long-running task finishes."""
    now = time.time()
    for _ in range(count):
        task_id = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        worker = rng.choice(WORKERS)
        base = {"uuid": task_id, "hostname": worker, "utcoffset": 0, "pid": 17, "clock": 0}
        state.event(Event("task-received", name="automation.notify_slack", args="()",
                          kwargs="{}", retries=0, timestamp=now - 0.3, local_received=now,
                          **base))
        state.event(Event("task-started", timestamp=now - 0.2, local_received=now, **base))
        state.event(Event("task-succeeded", result="None", runtime=0.2, timestamp=now,
                          local_received=now, **base))
    if stuck_ids:
        task_id = stuck_ids.pop()
        task = state.tasks.data.get(task_id)
        if task is not None and task.worker is not None:
            state.event(Event("task-succeeded", uuid=task_id, hostname=task.worker.hostname,
                              result="None", runtime=1.0, utcoffset=0, pid=17, clock=0,
                              timestamp=now, local_received=now))


def alert_counts(health: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in list(health.book.active.values()):
        counts[alert.kind] = counts.get(alert.kind, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--churn", type=int, default=30, help="short tasks per tick")
    parser.add_argument("--requests", type=int, default=30, help="stats() calls")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="  log %(levelname)s %(name)s: %(message)s")
    logging.getLogger("flower_ops.monitor.health.alerts").setLevel(logging.ERROR)
    logging.getLogger("flower_ops.monitor.auth").setLevel(logging.ERROR)
    print(f"bench_health: {args.tasks:,} tasks, {args.ticks} ticks, churn {args.churn} "
          f"tasks/tick; {environment_line()}")

    workload = build_workload(args.tasks, seed=args.seed)
    stuck_ids = [t for t, s in workload.finals.items() if s == "STARTED"]
    loop = asyncio.new_event_loop()
    io_loop = IOLoop(asyncio_loop=loop)  # never started: our calls are the only timer
    app = build_flower(io_loop, args.tasks + 10 * args.churn * (args.ticks + 10))
    ops = flower_ops.install(app)
    health = ops.health
    state = app.events.state
    for event in workload.events:
        state.event(event)
    _heartbeats(state)
    ops.index.sync()
    print(f"state: {len(state.tasks):,} tasks, {len(stuck_ids):,} STARTED on "
          f"{len(WORKERS)} workers")
    gc.collect()
    rng = random.Random(args.seed)

    print(heading("1. evaluate(): the 1 s timer's work on the IOLoop"))
    _heartbeats(state)  # filling and indexing took longer than a heartbeat's expiry
    first, _ = timed(health.evaluate)
    print(f"  first tick: {ms(first)}; active alerts {alert_counts(health)}")
    # Until every overdue task has its alert (the monitor may spread them out)
    catch_up: list[float] = []
    while len(catch_up) < 30:
        raised = health.book.raised_total
        _heartbeats(state)
        seconds, _ = timed(health.evaluate)
        if health.book.raised_total == raised:
            break
        catch_up.append(seconds)
    if catch_up:
        print(f"  catching up: {len(catch_up)} more ticks, max {ms(max(catch_up))}; "
              f"active alerts {alert_counts(health)}")
    ticks: list[float] = []
    for _ in range(args.ticks):
        _heartbeats(state)
        churn(state, rng, args.churn, stuck_ids)
        seconds, _ = timed(health.evaluate)
        ticks.append(seconds)
    steady = LatencySummary.of(ticks)
    print(steady.line("evaluate() at steady state, with churn"))
    print(f"  active alerts after: {alert_counts(health)}")

    print(heading("2. GET /stats and GET /alerts bodies, alerts active"))
    stats_s = [timed(ops.stats.stats)[0] for _ in range(args.requests)]
    stats = LatencySummary.of(stats_s)
    print(stats.line("ops.stats.stats()"))
    body = ops.stats.stats()
    print(f"  /stats alerts: {len(body['alerts'])} in the list"
          + (f", alerts_total {body['alerts_total']}" if "alerts_total" in body else ""))
    def summary() -> Any:
        try:
            return health.summary(limit=500)  # GET /alerts' default limit
        except TypeError:
            return health.summary()  # before /alerts had a limit
    summary_s = [timed(summary)[0] for _ in range(max(1, args.requests // 3))]
    print(LatencySummary.of(summary_s).line("health.summary() (/alerts default)"))

    print(heading("3. transitions, one tick each"))
    gone = WORKERS[0]
    now = time.time()
    state.event(Event("worker-offline", hostname=gone, pid=17, utcoffset=0, clock=0,
                      timestamp=now, local_received=now))
    seconds, _ = timed(health.evaluate)
    print(f"  {gone} announced shutdown: {ms(seconds)}; active {alert_counts(health)}")
    seconds, _ = timed(health.evaluate)
    print(f"  next tick: {ms(seconds)}")
    _heartbeats(state)
    seconds, _ = timed(health.evaluate)
    print(f"  {gone} back: {ms(seconds)}; active {alert_counts(health)}")
    seconds, _ = timed(health.evaluate)
    print(f"  next tick: {ms(seconds)}; active {alert_counts(health)}")

    print(heading("summary"))
    results = [
        check_line("evaluate() median", ms(steady.median_s), f"< {TARGET_MEDIAN_S * 1e3:.0f} ms",
                   steady.median_s < TARGET_MEDIAN_S),
        check_line("evaluate() p99", ms(steady.p99_s), f"< {TARGET_P99_S * 1e3:.0f} ms",
                   steady.p99_s < TARGET_P99_S),
        check_line("stats() median", ms(stats.median_s), f"< {TARGET_STATS_S * 1e3:.0f} ms",
                   stats.median_s < TARGET_STATS_S),
    ]
    print("\n".join(results))
    ops.blocking.shutdown()
    app.executor.shutdown(wait=False)
    io_loop.close(all_fds=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
