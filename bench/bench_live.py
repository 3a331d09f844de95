"""Benchmark for issue 5: the live feed against polling stock Flower, side by side.

One real monitor process (``celery -A testing.apps.automation flower-ops``), fed
synthetic Celery events (task-received / -started / -succeeded, real
``celery.events.EventDispatcher`` messages on Redis) at ``--rate`` task changes
per second, plus worker heartbeats. Then, one after the other against the
same monitor and the same event stream:

1. feed:  ``--clients`` WebSocket clients on ``/api/automation/monitoring/ws``
   (header JWT); every task change delivered to every client counts as one
   delivered update. Event-to-client latency = receive time minus the event
   timestamp of the task's current state (same machine clock), sampled in
   every ``--probe-every``-th client (they parse every message).
2. poll:  ``--clients`` HTTP keep-alive clients each polling Flower's
   ``/api/tasks?limit=50`` every 2 s (what its UI does); a delivered update is
   a (task, state) in a response that the client had not seen in its
   previous response; latency is measured the same way.

The monitor's CPU (user + system, from /proc via psutil) over each window is
divided by the updates delivered in it: the ratio of the two is the figure.

    .venv/bin/python bench/bench_live.py [--clients 1000] [--rate 1000] [--seconds 20]

Uses its own Redis db (``--redis-url``, default: one claimed the way the test
suite claims its db, so nobody else's), flushed before and after. Targets: feed p95 < 1 s, >= 10x less CPU per update.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (check_line, environment_line, heading, percentile, ratio, ws_frame,
                    ws_upgrade_request)

from flower_ops.core.times import parse_instant

SECRET = "bench-live-secret-0123456789abcdef"
NAMES = ("automation.report", "automation.sync", "automation.export", "automation.notify")
QUEUES = ("celery", "reports", "exports")
POLL_SECONDS = 2.0
MONITOR_ENV: list[str] = []


# -- the synthetic event producer ------------------------------------------------------------


def produce(redis_url: str, rate: float, stop_at: float, counter: Any) -> None:
    """Publish ``rate`` task changes per second: received -> started -> succeeded."""
    from celery import Celery
    from celery.events import EventDispatcher

    app = Celery(broker=redis_url)
    hostnames = [f"bench-worker-{i}@bench" for i in range(4)]
    with app.connection_for_write() as conn:
        dispatchers = {h: EventDispatcher(conn, hostname=h, enabled=True) for h in hostnames}
        in_flight: list[tuple[str, str, int]] = []  # (uuid, hostname, next step)
        sent = 0
        started = time.monotonic()
        last_heartbeat = 0.0
        while time.time() < stop_at:
            now_m = time.monotonic()
            if now_m - last_heartbeat > 2:
                for d in dispatchers.values():
                    d.send("worker-heartbeat", freq=2.0, active=len(in_flight) // 4,
                           processed=sent // 12, loadavg=[0.5, 0.4, 0.3], sw_ident="py-celery",
                           sw_ver="5.4", sw_sys="Linux")
                last_heartbeat = now_m
            due = int((now_m - started) * rate) - sent
            for _ in range(max(0, min(due, 200))):
                if len(in_flight) < 150 or not in_flight:
                    task_id = str(uuid.uuid4())
                    host = random.choice(hostnames)
                    dispatchers[host].send(
                        "task-received", uuid=task_id, name=random.choice(NAMES),
                        args=repr([random.randint(1, 10**6), "report-2024"]),
                        kwargs=repr({"tenant": "acme"}), retries=0, eta=None,
                        routing_key=random.choice(QUEUES), root_id=task_id, parent_id=None)
                    in_flight.append((task_id, host, 1))
                else:
                    index = random.randrange(len(in_flight))
                    task_id, host, step = in_flight[index]
                    if step == 1:
                        dispatchers[host].send("task-started", uuid=task_id)
                        in_flight[index] = (task_id, host, 2)
                    else:
                        dispatchers[host].send("task-succeeded", uuid=task_id,
                                               result=repr({"rows": 42}), runtime=0.2)
                        in_flight[index] = in_flight[-1]
                        in_flight.pop()
                sent += 1
            counter.value = sent
            time.sleep(0.002)


def event_time(task: dict[str, Any]) -> float | None:
    """The task's latest lifecycle instant (ISO 8601 UTC in the API), in epoch seconds."""
    times = [task.get(k) for k in ("succeeded", "failed", "started", "received", "sent")]
    present = [parse_instant(t) if isinstance(t, str) else float(t) for t in times if t]
    return max(present) if present else None


# -- feed clients ------------------------------------------------------------------------------


def feed_clients(url: str, token: str, count: int, probe_every: int, start_at: float,
                 stop_at: float, results: Any) -> None:
    """Raw asyncio WebSocket clients: Tornado's client costs more CPU than the
    server on a 2-core box, so frames are only walked (C-speed counting);
    probe clients also parse every ``tasks`` message for latency."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stats: dict[str, Any] = {"updates": 0, "messages": 0, "connected": 0, "closed_early": 0,
                             "latencies": [], "bytes": 0}

    class FeedClient(asyncio.Protocol):
        def __init__(self, probe: bool, done: asyncio.Future[None]) -> None:
            self.probe = probe
            self.done = done
            self.buf = bytearray()
            self.upgraded = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.write(ws_upgrade_request(parts.path, host, port, token))

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if not self.upgraded:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not self.buf.startswith(b"HTTP/1.1 101"):
                    self.transport.close()
                    return
                self.upgraded = True
                stats["connected"] += 1
                del self.buf[:end + 4]
            now = time.time()
            buf = self.buf
            offset = 0
            while (frame := ws_frame(buf, offset)) is not None:
                _, start, length = frame
                if start_at <= now < stop_at and buf.startswith(b'{"type":"tasks"', start):
                    payload = bytes(buf[start:start + length])
                    stats["messages"] += 1
                    stats["bytes"] += length
                    stats["updates"] += payload.count(b'{"id":')
                    if self.probe:
                        for task in json.loads(payload)["tasks"]:
                            at = event_time(task)
                            if at is not None:
                                stats["latencies"].append(now - at)
                offset = start + length
            if offset:
                del buf[:offset]

        def connection_lost(self, exc: Exception | None) -> None:
            if time.time() < stop_at:
                stats["closed_early"] += 1
            if not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        waits = []
        for i in range(count):
            done: asyncio.Future[None] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda d=done, p=(i % probe_every == 0): FeedClient(p, d), host, port)
            except OSError:
                stats["closed_early"] += 1
                continue
            transports.append(transport)
            waits.append(done)
            if i % 50 == 49:
                await asyncio.sleep(0.02)  # don't overflow the accept queue
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        for transport in transports:
            transport.close()

    asyncio.run(main())
    results.put(stats)


# -- polling clients ---------------------------------------------------------------------------


def poll_clients(host: str, port: int, count: int, probe_every: int, start_at: float,
                 stop_at: float, results: Any) -> None:
    stats = {"updates": 0, "responses": 0, "errors": 0, "latencies": [], "bytes": 0}
    request = (f"GET /api/tasks?limit=50 HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: application/json\r\n\r\n").encode()

    async def fetch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return await reader.readexactly(length)

    async def client(index: int) -> None:
        probe = index % probe_every == 0
        await asyncio.sleep(random.random() * POLL_SECONDS)
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            stats["errors"] += 1
            return
        previous: set[tuple[str, str]] = set()
        while time.time() < stop_at:
            began = time.time()
            try:
                body = await asyncio.wait_for(fetch(reader, writer), 60)
            except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
                stats["errors"] += 1
                return
            now = time.time()
            tasks = json.loads(body)
            seen = {(uuid_, t.get("state")) for uuid_, t in tasks.items()}
            if now >= start_at:
                stats["responses"] += 1
                stats["bytes"] += len(body)
                fresh = seen - previous  # a first response is all news to its client
                stats["updates"] += len(fresh)
                if probe:
                    for uuid_, _ in fresh:
                        at = event_time(tasks[uuid_])
                        if at is not None:
                            stats["latencies"].append(now - at)
            previous = seen
            await asyncio.sleep(max(0.0, POLL_SECONDS - (time.time() - began)))
        writer.close()

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(count)))

    asyncio.run(main())
    results.put(stats)


# -- orchestration -----------------------------------------------------------------------------


def start_monitor(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "JWT_SECRET": SECRET,
           "FLOWER_UNAUTHENTICATED_API": "true", "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "30",
           **dict(item.split("=", 1) for item in MONITOR_ENV)}
    log = open(f"/tmp/bench-live-monitor-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "testing.apps.automation",
                             "flower-ops", f"--port={port}", "--address=127.0.0.1",
                             "--logging=warning"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_up(port: int, timeout_s: float = 60) -> None:
    import requests

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("monitor did not start")


def run_phase(kind: str, args: argparse.Namespace, port: int, monitor: psutil.Process,
              token: str) -> dict[str, Any]:
    procs_n = args.client_processes
    per = [args.clients // procs_n + (1 if i < args.clients % procs_n else 0)
           for i in range(procs_n)]
    ramp = args.ramp_seconds
    start_at = time.time() + ramp
    stop_at = start_at + args.seconds
    results: Any = mp.Queue()
    procs = []
    for n in per:
        if kind == "feed":
            target, targs = feed_clients, (f"ws://127.0.0.1:{port}/api/automation/monitoring/ws",
                                           token, n, args.probe_every, start_at, stop_at, results)
        else:
            target, targs = poll_clients, ("127.0.0.1", port, n, args.probe_every, start_at,
                                           stop_at, results)
        proc = mp.Process(target=target, args=targs, daemon=True)
        proc.start()
        procs.append(proc)
    time.sleep(max(0.0, start_at - time.time()))
    clients = [psutil.Process(p.pid) for p in procs]
    client0 = sum(sum(c.cpu_times()[:2]) for c in clients)
    cpu0 = monitor.cpu_times()
    wall0 = time.time()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu1 = monitor.cpu_times()
    wall = time.time() - wall0
    client_cpu = sum(sum(c.cpu_times()[:2]) for c in clients) - client0
    merged: dict[str, Any] = {"latencies": []}
    for _ in procs:
        part = results.get(timeout=120)
        for key, value in part.items():
            if key == "latencies":
                merged["latencies"].extend(value)
            else:
                merged[key] = merged.get(key, 0) + value
    for proc in procs:
        proc.join(30)
    merged["cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    merged["sys_s"] = cpu1.system - cpu0.system
    merged["wall_s"] = wall
    merged["client_cpu_s"] = client_cpu
    return merged


def report(kind: str, r: dict[str, Any]) -> None:
    lat = sorted(r["latencies"])
    updates = r["updates"]
    print(f"  {kind:<5} monitor CPU {r['cpu_s']:.2f} s over {r['wall_s']:.1f} s "
          f"({100 * r['cpu_s'] / r['wall_s']:.0f}% of a core, {r['sys_s']:.2f} s system); updates delivered {updates:,} "
          f"({updates / r['wall_s']:,.0f}/s); {r['bytes'] / r['wall_s'] / 1e6:.1f} MB/s to clients")
    print(f"        client processes used {100 * r['client_cpu_s'] / r['wall_s']:.0f}% of a core; "
          f"load average {os.getloadavg()[0]:.1f}")
    if kind == "feed":
        print(f"        clients connected {r['connected']}, closed early {r['closed_early']}, "
              f"messages {r['messages']:,}")
    else:
        print(f"        responses {r['responses']:,} ({r['responses'] / r['wall_s']:.0f}/s, "
              f"wanted {args_clients / POLL_SECONDS:.0f}/s), errors {r['errors']}")
    if lat:
        print(f"        event-to-client latency n={len(lat):,}: p50 {percentile(lat, 50) * 1000:.0f} ms"
              f"  p95 {percentile(lat, 95) * 1000:.0f} ms  p99 {percentile(lat, 99) * 1000:.0f} ms")
    if updates:
        print(f"        CPU per delivered update: {r['cpu_s'] / updates * 1e6:.2f} µs")


args_clients = 0


def main() -> int:
    global args_clients
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000.0, help="task changes per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per phase")
    parser.add_argument("--ramp-seconds", type=float, default=8.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--redis-url", default=None,
                        help="default: a db claimed like the test suite does (never shared)")
    parser.add_argument("--monitor-env", action="append", default=[],
                        help="NAME=VALUE for the monitor, e.g. FLOWER_OPS_WS_FLUSH_SECONDS=0.3")
    args = parser.parse_args()
    MONITOR_ENV.extend(args.monitor_env)
    args_clients = args.clients

    import jwt
    import redis

    from flower_ops.demo.embedded import free_port

    service = db = None
    if args.redis_url is None:
        from testing.services import start_redis

        service = start_redis()
        db = service.claim_db()
        args.redis_url = service.url(db)
    redis.Redis.from_url(args.redis_url).flushdb()
    port = free_port()
    monitor_proc = start_monitor(args.redis_url, port)
    counter: Any = mp.Value("l", 0)
    producer: mp.Process | None = None
    try:
        wait_up(port)
        monitor = psutil.Process(monitor_proc.pid)
        token = jwt.encode({"sub": "bench", "scope": "monitoring:read",
                            "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        total = 2 * (args.ramp_seconds + args.seconds) + 40
        producer = mp.Process(target=produce, args=(args.redis_url, args.rate,
                                                    time.time() + total, counter), daemon=True)
        producer.start()
        time.sleep(5)  # fill Flower's memory a little before measuring
        print(heading(f"live feed vs polling Flower: {args.clients} clients, "
                      f"{args.rate:.0f} task changes/s"))
        print(environment_line())
        sent0 = counter.value
        t0 = time.time()
        feed = run_phase("feed", args, port, monitor, token)
        rate_feed = (counter.value - sent0) / (time.time() - t0)
        time.sleep(3)
        sent0 = counter.value
        t0 = time.time()
        poll = run_phase("poll", args, port, monitor, token)
        rate_poll = (counter.value - sent0) / (time.time() - t0)
        print(f"  producer: {rate_feed:.0f} changes/s during feed, {rate_poll:.0f} during poll")
        report("feed", feed)
        report("poll", poll)
        feed_cost = ratio(feed["cpu_s"], feed["updates"])
        poll_cost = ratio(poll["cpu_s"], poll["updates"])
        advantage = ratio(poll_cost, feed_cost)
        p95 = percentile(sorted(feed["latencies"]), 95) if feed["latencies"] else float("inf")
        print(check_line("feed p95 event-to-client latency", f"{p95 * 1000:.0f} ms", "< 1000 ms",
                         p95 < 1.0))
        print(check_line("CPU per update: poll / feed", f"{advantage:.1f}x", ">= 10x",
                         advantage >= 10))
        ok = p95 < 1.0 and advantage >= 10
        print(f"summary: feed p95 {p95 * 1000:.0f} ms, {advantage:.1f}x less monitor CPU per "
              f"delivered update than polling ({'PASS' if ok else 'FAIL'})")
        return 0 if ok else 1
    finally:
        if producer is not None and producer.is_alive():
            producer.terminate()
        monitor_proc.terminate()
        try:
            monitor_proc.wait(20)
        except subprocess.TimeoutExpired:
            monitor_proc.kill()
        redis.Redis.from_url(args.redis_url).flushdb()
        if service is not None and db is not None:
            service.release_db(db)


if __name__ == "__main__":
    sys.exit(main())
