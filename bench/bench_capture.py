"""Benchmark: the cost of lossless capture on the workers (issue #14).

    .venv/bin/python bench/bench_capture.py                     # full size
    .venv/bin/python bench/bench_capture.py --tasks 1000 --rounds 2   # scaled down

A real Celery worker (``celery -A testing.apps.automation worker -E``,
prefork, --concurrency) runs N tasks of 1 ms (``automation.sleep(0.001)``),
queued by a plain client; the same worker with ``FLOWER_OPS_CAPTURE=off``
(Celery events alone: pub/sub) and with capture on (events also appended to
the Redis stream), alternating, --rounds each. Per task: wall time from the
first send to the last result, and the worker's CPU (main process and pool
children). Target: capture ≤ 5 % over Celery events alone. Runs its own
embedded Redis; no sync worker (the stream only grows).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil
import redis
from celery import Celery
from common import check_line, environment_line, heading, ratio

from flower_ops.demo.embedded import EmbeddedRedis


def tree_cpu(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def wait_until(predicate, timeout_seconds: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def one_round(broker: str, admin: redis.Redis, *, capture: bool, tasks: int,
              concurrency: int, log: Path) -> tuple[float, float]:
    """(wall µs per task, worker CPU µs per task)."""
    admin.flushdb()
    hostname = f"bench-{os.getpid()}-{int(capture)}@host"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": broker,
           "FLOWER_OPS_CAPTURE": "auto" if capture else "off"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "testing.apps.automation", "worker", "-E",
             "-P", "prefork", "-c", str(concurrency), "-n", hostname, "--without-gossip",
             "--without-mingle", "--loglevel=WARNING"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    client = Celery("bench-client", broker=broker, backend=broker, set_as_current=False)
    try:
        if not wait_until(lambda: client.control.ping(destination=[hostname], timeout=0.5),
                          60, 0.2):
            raise SystemExit(f"worker did not start; see {log}")
        # warm up the pool: every child has imported and run the task once
        warm = [client.send_task("automation.sleep", args=(0.001,)) for _ in range(50)]
        for result in warm:
            result.get(timeout=60)
        admin.delete(*admin.keys("celery-task-meta-*"))
        time.sleep(0.5)
        cpu0 = tree_cpu(proc.pid)
        started = time.monotonic()
        with client.producer_or_acquire() as producer:
            for _ in range(tasks):
                client.send_task("automation.sleep", args=(0.001,), producer=producer)

        def done() -> bool:
            return sum(1 for _ in admin.scan_iter("celery-task-meta-*", count=5000)) >= tasks

        if not wait_until(done, 1800, 0.1):
            raise SystemExit(f"tasks did not finish; see {log}")
        wall = time.monotonic() - started
        cpu = tree_cpu(proc.pid) - cpu0
        if capture and not admin.exists("flower_ops:events"):
            raise SystemExit("capture on, but no stream was written")
        return wall / tasks * 1e6, cpu / tasks * 1e6
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def capture_cpu_per_event(broker: str, events: int) -> float:
    """CPU µs per event of the capture alone in one process: ``add`` (the
    task's thread) plus the background thread's JSON and pipelined XADD."""
    from celery.events import Event

    from flower_ops.capture import CaptureSettings, StreamCapture

    capture = StreamCapture(Celery("bench-cost", broker=broker, set_as_current=False),
                            CaptureSettings(max_pending=events + 1))
    sample = [Event("task-succeeded", uuid=f"task-{i}", result=repr(i), runtime=0.001,
                    hostname="bench@host", utcoffset=0, pid=1, clock=i) for i in range(events)]
    started = time.process_time()
    for event in sample:
        capture.add(event)
    capture.close(timeout_seconds=600)
    return (time.process_time() - started) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cost-events", type=int, default=200_000,
                        help="events for the in-process cost of capture per event")
    args = parser.parse_args()
    print(environment_line(), flush=True)
    server = EmbeddedRedis()
    server.start()
    broker = server.url(0)
    admin = redis.Redis(host=server.host, port=server.port)
    log = Path(f"/tmp/bench-capture-{os.getpid()}.log")
    print(f"worker logs: {log}")
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        print(heading("capture alone, in one process"))
        per_event = capture_cpu_per_event(broker, args.cost_events)
        print(f"  {per_event:.1f} µs CPU per event (add + JSON + XADD); a task's worker "
              f"events (received, started, succeeded): {3 * per_event:.0f} µs = "
              f"{3 * per_event / 10:.1f} % of a 1 ms task", flush=True)
        print(heading(f"{args.tasks} tasks of 1 ms, prefork -c {args.concurrency}, "
                      f"{args.rounds} rounds each, alternating"))
        for _ in range(args.rounds):
            for capture in (False, True):
                wall, cpu = one_round(broker, admin, capture=capture, tasks=args.tasks,
                                      concurrency=args.concurrency, log=log)
                results[capture].append((wall, cpu))
                print(f"  {'capture on ' if capture else 'events only'}: {wall:8.0f} µs/task "
                      f"wall  {cpu:8.0f} µs/task worker CPU   ({environment_line()})",
                      flush=True)
    finally:
        server.stop()
        server.cleanup()
    base_wall = statistics.median(w for w, _ in results[False])
    base_cpu = statistics.median(c for _, c in results[False])
    cap_wall = statistics.median(w for w, _ in results[True])
    cap_cpu = statistics.median(c for _, c in results[True])
    print(f"  medians: events only {base_wall:.0f} µs wall / {base_cpu:.0f} µs CPU per task; "
          f"capture on {cap_wall:.0f} / {cap_cpu:.0f}; capture's CPU "
          f"{cap_cpu - base_cpu:+.0f} µs per task")
    wall_over = (ratio(cap_wall, base_wall) - 1) * 100
    cpu_over = (ratio(cap_cpu, base_cpu) - 1) * 100
    print(check_line("capture wall time over events alone", f"{wall_over:+.1f} %", "<= 5 %",
                     wall_over <= 5.0))
    print(f"  (worker CPU over events alone: {cpu_over:+.1f} %)")


if __name__ == "__main__":
    main()
