"""Benchmark: sync workers sharing the capture stream (issue #14).

    .venv/bin/python bench/bench_scale.py                          # full size
    .venv/bin/python bench/bench_scale.py --ingest-tasks 10000 \
        --burst-events 40000 --down-seconds 10                     # scaled down

Runs its own embedded Redis; PostgreSQL is the machine's (``--pg-admin-url``)
in scratch databases dropped at the end. Replicas are real ``python -m
sync_worker`` processes (reconciliation and discovery off: every row and
history entry here comes from the stream).

Phases:
1. ingest: replicas started and stopped (SIGSTOP) on an empty stream, the
   stream filled with N task lifecycles (4 events each) the way
   ``instrument(app)`` writes them, then the replicas continued (SIGCONT);
   events/s committed from the first commit to the last, and the replicas'
   CPU per event. One replica, then (fresh database, same N) two; ratio.
2. burst: --burst-events published as fast as one instrumented publisher can
   (pub/sub + stream); at half way every replica is killed (-9) and stays
   down --down-seconds; then they are started again. Transitions lost
   (history rows missing; target 0), time to drain after the restart, Redis
   memory per captured event.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg
import redis
from celery import Celery
from celery.events import Event
from common import check_line, environment_line, heading, ratio

from flower_ops.capture import CaptureSettings, StreamCapture
from flower_ops.demo.embedded import EmbeddedRedis, free_port

STREAM = "flower_ops:events"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Replica:
    def __init__(self, broker: str, database_url: str, log: Path, extra: dict[str, str]) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": broker,
               "DATABASE_URL": database_url, "FLOWER_OPS_SYNC_METRICS_PORT": str(self.port),
               "FLOWER_OPS_SYNC_METRICS_ADDRESS": "127.0.0.1",
               "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "86400",
               "FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS": "0",
               "FLOWER_OPS_SYNC_BATCH_SIZE": "5000", **extra}
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sync_worker"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def events(self) -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                          timeout=2).read().decode()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("flower_ops_sync_events_total "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def reading(self) -> bool:
        mark = f"-{self.proc.pid}-"
        return any("stream consumer" in line and mark in line and "reading" in line
                   for line in self.log.read_text(errors="replace").splitlines())

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(predicate, timeout_seconds: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def lifecycle_events(task_id: str, i: int, clock: int) -> list[dict[str, object]]:
    common = {"uuid": task_id, "name": "bench.add", "args": f"({i}, {i})", "kwargs": "{}",
              "retries": 0, "eta": None, "expires": None, "root_id": task_id,
              "parent_id": None}
    base = {"hostname": "bench@host", "utcoffset": 0, "pid": 1}
    return [Event("task-sent", clock=clock, queue="celery", exchange="", routing_key="celery",
                  **base, **common),
            Event("task-received", clock=clock + 1, **base, **common),
            Event("task-started", clock=clock + 2, uuid=task_id, **base),
            Event("task-succeeded", clock=clock + 3, uuid=task_id, result=repr(2 * i),
                  runtime=0.001, **base)]


def prefill(broker: str, tasks: int) -> None:
    app = Celery(broker=broker, set_as_current=False)
    capture = StreamCapture(app, CaptureSettings(maxlen=50_000_000, max_pending=50_000_000))
    for i in range(tasks):
        for event in lifecycle_events(f"ingest-{uuid.uuid4()}", i, 4 * i):
            capture.add(event)
    capture.close(timeout_seconds=600)


class Scratch:
    """A fresh PostgreSQL database per run, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def fresh(self) -> str:
        name = f"bench_scale_{os.getpid()}_{len(self.names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ingest(broker: str, admin: redis.Redis, scratch: Scratch, replicas: int, tasks: int,
           log: Path) -> tuple[float, float]:
    """(events/s committed, replicas' CPU µs per event)."""
    admin.delete(STREAM)
    database_url = scratch.fresh()
    procs = [Replica(broker, database_url, log, {}) for _ in range(replicas)]
    try:
        if not wait_until(lambda: all(p.reading() for p in procs), 60):
            raise SystemExit(f"replicas did not start; see {log}")
        time.sleep(0.5)
        for p in procs:
            p.signal(signal.SIGSTOP)
        prefill(broker, tasks)
        total = 4 * tasks
        cpu0 = sum(cpu_seconds(p.proc.pid) for p in procs)
        for p in procs:
            p.signal(signal.SIGCONT)
        if not wait_until(lambda: sum(p.events() for p in procs) > 0, 120, 0.01):
            raise SystemExit(f"nothing committed; see {log}")
        started, first = time.monotonic(), sum(p.events() for p in procs)
        if not wait_until(lambda: sum(p.events() for p in procs) >= total, 1800, 0.02):
            raise SystemExit(f"not drained; see {log}")
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(p.proc.pid) for p in procs) - cpu0
        return (total - first) / elapsed, cpu / total * 1e6
    finally:
        for p in procs:
            p.stop()


def history_count(database_url: str) -> int:
    try:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM automation.job_execution_history"
                               ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def burst(broker: str, admin: redis.Redis, scratch: Scratch, replicas: int, events: int,
          down_seconds: float, log: Path) -> dict[str, float]:
    admin.delete(STREAM)
    database_url = scratch.fresh()
    procs = [Replica(broker, database_url, log, {}) for _ in range(replicas)]
    if not wait_until(lambda: all(p.reading() for p in procs), 60):
        raise SystemExit(f"replicas did not start; see {log}")
    # the capture writer of instrument(app) at full speed (Celery's own
    # dispatcher publishes a few thousand events/s per process: bench_capture.py)
    capture = StreamCapture(Celery("bench-burst", broker=broker, set_as_current=False),
                            CaptureSettings())
    tasks = events // 4
    killed_at = time.monotonic()
    memory_before = int(admin.info("memory")["used_memory"])
    figures: dict[str, float] = {}
    try:
        started = time.monotonic()
        for i in range(tasks):
            for event in lifecycle_events(f"burst-{uuid.uuid4()}", i, 4 * i):
                capture.add(event)
            if i == tasks // 2:
                for p in procs:
                    p.proc.kill()
                    p.proc.wait()
                killed_at = time.monotonic()
        capture.close(timeout_seconds=120)
        figures["publish_events_per_s"] = events / (time.monotonic() - started)
        figures["capture_dropped"] = capture.dropped
        length = admin.xlen(STREAM)
        memory = int(admin.info("memory")["used_memory"]) - memory_before
        figures["stream_entries"] = length
        figures["redis_bytes_per_event"] = memory / max(1, events)
        time.sleep(max(0.0, killed_at + down_seconds - time.monotonic()))
        restarted = time.monotonic()
        procs = [Replica(broker, database_url, log, {}) for _ in range(replicas)]
        wait_until(lambda: history_count(database_url) >= 4 * tasks, 1800, 0.2)
        figures["drain_seconds"] = time.monotonic() - restarted
        figures["lost"] = 4 * tasks - history_count(database_url)
        figures["down_seconds"] = time.monotonic() - killed_at - figures["drain_seconds"]
        return figures
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ingest-tasks", type=int, default=50_000,
                        help="task lifecycles prefilled for the ingest phase (4 events each)")
    parser.add_argument("--burst-events", type=int, default=300_000)
    parser.add_argument("--burst-replicas", type=int, default=2)
    parser.add_argument("--down-seconds", type=float, default=60.0)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip", default="", help="comma list of phases to skip (ingest,burst)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(environment_line(), flush=True)
    server = EmbeddedRedis()
    server.start()
    broker = server.url(0)
    admin = redis.Redis(host=server.host, port=server.port)
    scratch = Scratch(args.pg_admin_url)
    log = Path(f"/tmp/bench-scale-{os.getpid()}.log")
    print(f"replica logs: {log}", flush=True)
    try:
        if "ingest" not in skip:
            print(heading(f"ingest: {4 * args.ingest_tasks} events prefilled, 1 vs 2 replicas"))
            one, one_cpu = ingest(broker, admin, scratch, 1, args.ingest_tasks, log)
            print(f"  1 replica : {one:10.0f} events/s  CPU {one_cpu:6.1f} µs/event   "
                  f"({environment_line()})", flush=True)
            two, two_cpu = ingest(broker, admin, scratch, 2, args.ingest_tasks, log)
            print(f"  2 replicas: {two:10.0f} events/s  CPU {two_cpu:6.1f} µs/event   "
                  f"({environment_line()})", flush=True)
            print(check_line("2 replicas vs 1 (events/s committed)",
                             f"{ratio(two, one):.2f}x", ">= 1.60x", ratio(two, one) >= 1.6))
        if "burst" not in skip:
            print(heading(f"burst: {args.burst_events} events, every replica killed -9 half "
                          f"way for {args.down_seconds:.0f}s"))
            got = burst(broker, admin, scratch, args.burst_replicas, args.burst_events,
                        args.down_seconds, log)
            print(f"  published {got['publish_events_per_s']:.0f} events/s into the stream "
                  f"(the capture writer alone); dropped {got['capture_dropped']:.0f}; stream "
                  f"{got['stream_entries']:.0f} entries, Redis "
                  f"{got['redis_bytes_per_event']:.0f} bytes/event; down "
                  f"{got['down_seconds']:.0f}s", flush=True)
            print(check_line("transitions lost", f"{got['lost']:.0f}", "0", got["lost"] == 0))
            print(f"  drained {got['drain_seconds']:.1f}s after the replicas came back "
                  f"({args.burst_replicas} replicas; {environment_line()})")
    finally:
        server.stop()
        server.cleanup()
        scratch.drop()


if __name__ == "__main__":
    main()
