"""Benchmark: Celery events -> committed rows (sync worker) vs Flower's own
``flower.events.EventsState`` consuming the same event stream in the same run.

    .venv/bin/python bench/bench_sync.py                      # full size
    .venv/bin/python bench/bench_sync.py --throughput-tasks 5000 \
        --latency-seconds 5 --burst-events 40000              # scaled down

Runs its own embedded Redis; PostgreSQL is the machine's (``--pg-admin-url``)
in a scratch database dropped at the end. Both consumers are subprocesses, so
neither shares a GIL with the publisher or the other.

Phases:
1. throughput: N task lifecycles (4 events each) published with Redis's pub/sub
   output buffer unlimited; each consumer's rate = events / time to drain them.
2. latency: a paced stream at --rate events/s; p50/p99 of event time -> row
   commit (``updated_at - succeeded_at`` of each final row).
3. burst: --burst-events published as fast as possible with Redis's default
   pub/sub limits (slow subscribers get dropped); every task's result is in
   the result backend; after reconciliation, count rows whose final state is
   wrong (target 0) and tasks with no row at all.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg
import redis
from celery import Celery

from flower_ops.demo.embedded import EmbeddedRedis, free_port

# Flower's real path: its ``Events`` thread (kombu EventReceiver) hands every
# event to the IOLoop, where ``EventsState.event`` applies it. Counted on the
# IOLoop, i.e. when Flower's state has it.
FLOWER_CONSUMER = r"""
import asyncio, sys, threading, time
from celery import Celery
from tornado.ioloop import IOLoop, PeriodicCallback
from flower.events import Events
app = Celery(broker=sys.argv[1])
count = [0]

async def main():
    events = Events(app, IOLoop.current(), max_tasks_in_memory=10000, enable_events=False)
    apply = events.state.event
    def counted(event):
        apply(event)
        count[0] += 1
    events.state.event = counted      # Events.on_event looks it up per event
    PeriodicCallback(lambda: print(count[0], flush=True), 100).start()
    events.start()
    await asyncio.sleep(2)            # EventReceiver subscribed
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class FlowerConsumer:
    def __init__(self, broker_url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", FLOWER_CONSUMER, broker_url],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        self.count = 0
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "READY":
                self.ready.set()
            elif line.isdigit():
                self.count = int(line)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class SyncConsumer:
    def __init__(self, broker_url: str, database_url: str, log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": broker_url,
               "DATABASE_URL": database_url, "FLOWER_OPS_SYNC_METRICS_PORT": str(self.port),
               "FLOWER_OPS_SYNC_METRICS_ADDRESS": "127.0.0.1",
               "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "5",
               "FLOWER_OPS_SYNC_RECONCILE_BATCH_SIZE": "2000",
               "FLOWER_OPS_SYNC_BATCH_SIZE": "5000"}
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sync_worker"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def metric(self, name: str) -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                          timeout=2).read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + " ", name + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def events(self) -> float:
        return self.metric("flower_ops_sync_events_total")

    def listening(self) -> bool:
        return "listening to Celery events" in self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


_CLOCK = [0]


def _message(kind: str, fields: dict[str, object], *, db: int) -> tuple[str, bytes]:
    """One event exactly as kombu's Redis transport fans it out (pub/sub)."""
    _CLOCK[0] += 1
    body = {"hostname": "bench@host", "utcoffset": 0.0, "pid": 1, "clock": _CLOCK[0],
            "timestamp": time.time(), "type": kind, **fields}
    routing_key = kind.replace("-", ".")
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"hostname": "bench@host"},
        "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
                       "delivery_tag": str(uuid.uuid4())}}
    return f"/{db}.celeryev/{routing_key}", json.dumps(envelope).encode()


def lifecycle_messages(task_id: str, i: int, *, db: int = 0) -> list[tuple[str, bytes]]:
    common = {"uuid": task_id, "name": "bench.add", "args": f"({i}, {i})", "kwargs": "{}",
              "retries": 0, "eta": None, "expires": None, "root_id": task_id,
              "parent_id": None}
    return [
        _message("task-sent", {**common, "queue": "celery", "exchange": "",
                               "routing_key": "celery"}, db=db),
        _message("task-received", common, db=db),
        _message("task-started", {"uuid": task_id}, db=db),
        _message("task-succeeded", {"uuid": task_id, "result": repr(2 * i),
                                    "runtime": 0.001}, db=db),
    ]


def publish_raw(client: redis.Redis, messages: list[tuple[str, bytes]], *,
                chunk: int = 2000) -> None:
    for start in range(0, len(messages), chunk):
        pipe = client.pipeline(transaction=False)
        for channel, payload in messages[start:start + chunk]:
            pipe.publish(channel, payload)
        pipe.execute()


def lifecycle(dispatcher, task_id: str, i: int, *, hostname: str) -> None:  # type: ignore[no-untyped-def]
    send = dispatcher.send
    send("task-sent", uuid=task_id, name="bench.add", args=f"({i}, {i})", kwargs="{}",
         retries=0, eta=None, expires=None, queue="celery", exchange="",
         routing_key="celery", root_id=task_id, parent_id=None)
    send("task-received", uuid=task_id, name="bench.add", args=f"({i}, {i})", kwargs="{}",
         retries=0, eta=None, expires=None, root_id=task_id, parent_id=None)
    send("task-started", uuid=task_id)
    send("task-succeeded", uuid=task_id, result=repr(2 * i), runtime=0.001)


def publish(app: Celery, count_tasks: int, *, rate_events_per_second: float | None = None,
            prefix: str) -> list[str]:
    ids = [f"{prefix}-{uuid.uuid4()}" for _ in range(count_tasks)]
    started = time.monotonic()
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="bench@host", enabled=True,
                                           buffer_while_offline=False)
        for i, task_id in enumerate(ids):
            lifecycle(dispatcher, task_id, i, hostname="bench@host")
            if rate_events_per_second:
                due = started + (i + 1) * 4 / rate_events_per_second
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    return ids


def store_results(client: redis.Redis, ids: list[str]) -> None:
    """What workers would have written to the result backend."""
    pipe = client.pipeline(transaction=False)
    done = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    for i, task_id in enumerate(ids):
        pipe.set(f"celery-task-meta-{task_id}", json.dumps(
            {"status": "SUCCESS", "result": 2 * i, "traceback": None, "children": [],
             "date_done": done, "task_id": task_id}))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def eventsstate_alone(count_tasks: int) -> float:
    """Events/s of ``EventsState.event()`` alone on pre-decoded events (no
    broker, no kombu): context for the end-to-end figures."""
    from flower.events import EventsState

    from sync_worker.redis_events import decode_events

    events = [event for i in range(count_tasks)
              for _, payload in lifecycle_messages(f"alone-{uuid.uuid4()}", i)
              for event in decode_events(payload)]
    state = EventsState(max_tasks_in_memory=10000)
    started = time.perf_counter()
    for event in events:
        state.event(event)
    return len(events) / (time.perf_counter() - started)


def wait_until(predicate, timeout_seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput-tasks", type=int, default=25_000,
                        help="task lifecycles for the throughput phase (4 events each)")
    parser.add_argument("--rate", type=float, default=5000.0, help="latency phase events/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--burst-events", type=int, default=300_000)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip", default="", help="comma list of phases to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    server = EmbeddedRedis()
    server.start()
    broker = server.url(0)
    admin = redis.Redis(host=server.host, port=server.port)
    dbname = f"bench_sync_{os.getpid()}"
    with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    database_url = args.pg_admin_url.rsplit("/", 1)[0] + f"/{dbname}"
    log = Path(f"/tmp/bench-sync-{os.getpid()}.log")
    sync = SyncConsumer(broker, database_url, log)
    flower = FlowerConsumer(broker)
    figures: dict[str, object] = {}
    try:
        if not wait_until(lambda: sync.listening() and flower.ready.is_set(), 60):
            raise SystemExit(f"consumers did not start; see {log}")
        time.sleep(1)

        if "throughput" not in skip:
            admin.config_set("client-output-buffer-limit", "pubsub 0 0 0")
            n_events = args.throughput_tasks * 4
            base_sync, base_flower = sync.events(), flower.count
            messages = [m for i in range(args.throughput_tasks)
                        for m in lifecycle_messages(f"tp-{uuid.uuid4()}", i)]
            cpu0 = {"sync": cpu_seconds(sync.proc.pid), "flower": cpu_seconds(flower.proc.pid)}
            cpu: dict[str, float] = {}
            t0 = time.monotonic()
            publish_raw(admin, messages)
            t_pub = time.monotonic() - t0
            done: dict[str, float] = {}

            def progress() -> bool:
                now = time.monotonic() - t0
                if "sync" not in done and sync.events() - base_sync >= n_events:
                    done["sync"] = now
                    cpu["sync"] = cpu_seconds(sync.proc.pid) - cpu0["sync"]
                if "flower" not in done and flower.count - base_flower >= n_events:
                    done["flower"] = now
                    cpu["flower"] = cpu_seconds(flower.proc.pid) - cpu0["flower"]
                return len(done) == 2
            wait_until(progress, 600)
            sync_rate = n_events / done.get("sync", float("inf"))
            flower_rate = n_events / done.get("flower", float("inf"))
            alone_rate = eventsstate_alone(args.throughput_tasks)
            figures["throughput"] = {
                "events": n_events, "publish_seconds": round(t_pub, 2),
                "sync_worker_events_per_second_committed": round(sync_rate),
                "flower_events_thread_eventsstate_events_per_second": round(flower_rate),
                "ratio": round(sync_rate / flower_rate, 2) if flower_rate else None,
                # CPU the consumer process itself spent per event (the sync
                # worker's PostgreSQL backend not included): load-independent
                "sync_worker_cpu_us_per_event": round(cpu.get("sync", 0) / n_events * 1e6, 1),
                "flower_cpu_us_per_event": round(cpu.get("flower", 0) / n_events * 1e6, 1),
                "context_eventsstate_event_alone_predecoded_events_per_second":
                    round(alone_rate),
                "ratio_vs_eventsstate_alone": round(sync_rate / alone_rate, 2)}
            print("throughput:", json.dumps(figures["throughput"]), flush=True)
            admin.config_set("client-output-buffer-limit", "pubsub 33554432 8388608 60")

        if "latency" not in skip:
            tasks = int(args.rate * args.latency_seconds / 4)
            started = time.monotonic()
            per_tick = max(1, int(args.rate / 4 / 100))   # tasks per 10 ms tick
            for tick, first in enumerate(range(0, tasks, per_tick)):
                due = started + tick * 0.01
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                publish_raw(admin, [m for i in range(first, min(tasks, first + per_tick))
                                    for m in lifecycle_messages(f"lat-{uuid.uuid4()}", i)])
            with psycopg.connect(database_url) as conn:
                wait_until(lambda: conn.execute(
                    "SELECT count(*) FROM automation.job_executions WHERE execution_id LIKE "
                    "'lat-%%' AND status = 'success'").fetchone()[0] >= tasks, 60)  # type: ignore[index]
                lat = [r[0] for r in conn.execute(
                    "SELECT extract(epoch FROM updated_at - succeeded_at) FROM "
                    "automation.job_executions WHERE execution_id LIKE 'lat-%%' "
                    "AND status = 'success'")]
            lat.sort()
            figures["latency"] = {
                "rate_events_per_second": args.rate, "tasks": tasks, "rows": len(lat),
                "p50_ms": round(float(lat[len(lat) // 2]) * 1000, 1) if lat else None,
                "p99_ms": round(float(lat[int(len(lat) * 0.99) - 1]) * 1000, 1) if lat else None,
                "max_ms": round(float(lat[-1]) * 1000, 1) if lat else None}
            print("latency:", json.dumps(figures["latency"]), flush=True)

        if "burst" not in skip:
            tasks = args.burst_events // 4
            ids = [f"burst-{uuid.uuid4()}" for _ in range(tasks)]
            results = redis.Redis(host=server.host, port=server.port, db=0)
            store_results(results, ids)
            messages = [m for i, task_id in enumerate(ids)
                        for m in lifecycle_messages(task_id, i)]
            base_flower = flower.count
            t0 = time.monotonic()
            publish_raw(admin, messages)
            t_pub = time.monotonic() - t0

            last = [-1.0, time.monotonic()]

            def settled() -> bool:
                # drained: committed events stable for 5 s, then no open rows left
                now_events = sync.events()
                if now_events != last[0]:
                    last[:] = [now_events, time.monotonic()]
                    return False
                if time.monotonic() - last[1] < 5:
                    return False
                with psycopg.connect(database_url) as conn:
                    (open_rows,) = conn.execute(
                        "SELECT count(*) FROM automation.job_executions WHERE execution_id "
                        "LIKE 'burst-%%' AND status <> 'success'").fetchone()  # type: ignore[misc]
                    (have,) = conn.execute(
                        "SELECT count(*) FROM automation.job_executions WHERE execution_id "
                        "LIKE 'burst-%%'").fetchone()  # type: ignore[misc]
                return open_rows == 0 and have == tasks
            converged = wait_until(settled, 180)
            t_conv = time.monotonic() - t0
            with psycopg.connect(database_url) as conn:
                rows, wrong = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE status <> 'success' OR "
                    "(args IS NOT NULL AND result IS DISTINCT FROM "
                    "to_jsonb((args->>0)::int * 2))) FROM automation.job_executions "
                    "WHERE execution_id LIKE 'burst-%%'").fetchone()  # type: ignore[misc]
            figures["burst"] = {
                "events": tasks * 4, "publish_seconds": round(t_pub, 2),
                "publish_events_per_second": round(tasks * 4 / t_pub),
                "flower_events_seen": flower.count - base_flower,
                "sync_broker_reconnects": sync.metric("flower_ops_sync_reconnects_total"),
                "sync_reconciled_rows": sync.metric("flower_ops_sync_reconciled_rows_total"),
                "sync_discovered_rows": sync.metric("flower_ops_sync_discovered_rows_total"),
                "sync_events_committed": sync.events(),
                "rows": rows, "tasks_without_row": tasks - rows,
                "rows_with_wrong_final_state": wrong, "converged": converged,
                "seconds_to_converge": round(t_conv, 1)}
            print("burst:", json.dumps(figures["burst"]), flush=True)
    finally:
        exit_code = sync.stop()
        flower.stop()
        server.stop()
        server.cleanup()
        with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    print("sync worker exit code on SIGTERM:", exit_code)
    print(json.dumps(figures, indent=2))


def _publish_part(app: Celery, part: list[str], offset: int) -> None:
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname="bench@host", enabled=True,
                                           buffer_while_offline=False)
        for i, task_id in enumerate(part):
            lifecycle(dispatcher, task_id, offset + i, hostname="bench@host")


if __name__ == "__main__":
    main()
