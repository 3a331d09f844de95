"""Load generators of bench_load.py, each run in its own process.

The clients are raw asyncio sockets (bench_live.py's approach): on a 2-core
machine a heavier client would take the CPU the monitor is measured on.

* ``api_clients``: keep-alive HTTP clients looping over ``ENDPOINTS`` with a
  think time, plus the ingest probe (event published -> detail answers 200);
* ``feed_clients``: WebSocket holders of our live feed (header JWT);
* ``poll_clients``: Flower's UI way of staying current, ``/tasks/datatable``
  polled at an interval.

Each puts one dict of figures on the ``results`` queue when it is done.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import struct
import time
import uuid as uuidlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from bench_api import TASK_QUEUES, WORKERS
from bench_live import event_time
from common import ws_client_text, ws_frame, ws_upgrade_request

API = "/api/automation/monitoring"
PROBE_EVERY_S = 2.0
PROBE_TIMEOUT_S = 30.0
FEED_PROBE_EVERY = 50  # every n-th feed/poll client parses messages for latency


@dataclass(frozen=True)
class Endpoint:
    key: str
    ours: str
    flower: str


ENDPOINTS = (
    Endpoint("stats", "/stats", "/metrics"),
    Endpoint("tasks", "/tasks?limit=50", "/api/tasks?limit=50&sort_by=-received"),
    Endpoint("tasks_state", "/tasks?state=FAILURE&limit=50",
             "/api/tasks?state=FAILURE&limit=50&sort_by=-received"),
    Endpoint("tasks_name_worker", "/tasks?name=N&worker=W&limit=50",
             "/api/tasks?taskname=N&workername=W&limit=50&sort_by=-received"),
    Endpoint("tasks_paged", "/tasks?state=SUCCESS&limit=50&cursor=C (pages 1-5)",
             "/api/tasks?state=SUCCESS&limit=50&offset=0..200&sort_by=-received"),
    Endpoint("tasks_search", "/tasks?search=item-NNN&limit=50",
             "/api/tasks?search=item-NNN&limit=50&sort_by=-received"),
    Endpoint("task", "/tasks/{id}", "/api/task/info/{id}"),
    Endpoint("workers", "/workers", "/workers?json=1"),
    Endpoint("queues", "/queues", "/api/queues/length"),
)
PAGES = 5


# -- HTTP clients ------------------------------------------------------------------------------


class HttpConn:
    """One keep-alive HTTP/1.1 connection (raw asyncio streams: the client
    must cost far less CPU than the server it loads)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"GET " + path.encode() + b" " + self._head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in parts)
        else:
            body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class BadBody(ValueError):
    pass


@dataclass
class ClientState:
    rng: random.Random
    ids: deque[str]
    page: int = 0
    cursor: str | None = None


def api_path(side: str, key: str, st: ClientState) -> str:
    rng = st.rng
    if key == "tasks_name_worker":
        name = quote(rng.choice(tuple(TASK_QUEUES)))
        worker = quote(rng.choice(WORKERS))
    if side == "ours":
        if key == "stats":
            return f"{API}/stats"
        if key == "tasks":
            return f"{API}/tasks?limit=50"
        if key == "tasks_state":
            return f"{API}/tasks?state=FAILURE&limit=50"
        if key == "tasks_name_worker":
            return f"{API}/tasks?name={name}&worker={worker}&limit=50"
        if key == "tasks_paged":
            if st.page == 0 or st.cursor is None:
                st.page, st.cursor = 0, None
                return f"{API}/tasks?state=SUCCESS&limit=50"
            return f"{API}/tasks?state=SUCCESS&limit=50&cursor={quote(st.cursor)}"
        if key == "tasks_search":
            return f"{API}/tasks?search=item-{rng.randrange(100, 1000)}&limit=50"
        if key == "task":
            return f"{API}/tasks/{rng.choice(st.ids)}"
        return f"{API}/{key}"
    if key == "stats":
        return "/metrics"
    if key == "tasks":
        return "/api/tasks?limit=50&sort_by=-received"
    if key == "tasks_state":
        return "/api/tasks?state=FAILURE&limit=50&sort_by=-received"
    if key == "tasks_name_worker":
        return f"/api/tasks?taskname={name}&workername={worker}&limit=50&sort_by=-received"
    if key == "tasks_paged":
        return f"/api/tasks?state=SUCCESS&limit=50&offset={st.page * 50}&sort_by=-received"
    if key == "tasks_search":
        return f"/api/tasks?search=item-{rng.randrange(100, 1000)}&limit=50&sort_by=-received"
    if key == "task":
        return f"/api/task/info/{rng.choice(st.ids)}"
    if key == "workers":
        return "/workers?json=1"
    return "/api/queues/length"


def absorb(side: str, key: str, body: bytes, st: ClientState) -> None:
    """Check the answer's shape; keep ids (for details) and cursors (for pages)."""
    if key == "stats":
        if side == "ours" and b'"by_state"' not in body:
            raise BadBody("no tasks.by_state")
        if side == "flower" and b"flower_events_total" not in body:
            raise BadBody("no flower_events_total")
        return
    if not key.startswith("task"):
        json.loads(body)
        return
    doc = json.loads(body)
    if key == "task":
        if not isinstance(doc, dict) or not (doc.get("id") or doc.get("uuid")):
            raise BadBody("task detail without id")
        return
    if side == "ours":
        ids = [t["id"] for t in doc["tasks"]]
        if key == "tasks_paged":
            st.cursor = doc.get("next")
            st.page = (st.page + 1) % PAGES
    else:
        if not isinstance(doc, dict):
            raise BadBody("task list is not an object")
        ids = list(doc)
        if key == "tasks_paged":
            st.page = (st.page + 1) % PAGES
    # Details are asked for tasks seen in the newest pages (searches reach old
    # tasks, which eviction may take before the detail is asked for)
    if ids and key != "tasks_search":
        st.ids.extend(ids[:10])


def api_clients(side: str, port: int, token: str, count: int, think_s: float, start_at: float,
                stop_at: float, timeout_s: float, seed: int, seed_ids: list[str],
                redis_url: str, with_probe: bool, clock_floor: int, results: Any) -> None:
    headers = {"Authorization": f"Bearer {token}"} if side == "ours" else {}
    keys = [e.key for e in ENDPOINTS]
    latencies: dict[str, list[float]] = {k: [] for k in keys}
    errors: dict[str, Counter[str]] = {k: Counter() for k in keys}
    examples: dict[str, str] = {}

    async def client(index: int) -> None:
        rng = random.Random(seed * 100_003 + index)
        st = ClientState(rng=rng, ids=deque(rng.sample(seed_ids, min(20, len(seed_ids))),
                                            maxlen=200))
        conn = HttpConn(port, headers)
        k = rng.randrange(len(keys))
        await asyncio.sleep(rng.random() * think_s)
        while time.time() < stop_at:
            key = keys[k % len(keys)]
            k += 1
            path = api_path(side, key, st)
            began = time.time()
            t = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.get(path), timeout_s)
                elapsed = time.perf_counter() - t
                if status != 200:
                    errors[key][f"HTTP {status}"] += 1
                    examples.setdefault(f"{key} HTTP {status}", f"{path} -> {body[:200]!r}")
                else:
                    absorb(side, key, body, st)
                    if start_at <= began < stop_at:
                        latencies[key].append(elapsed)
            except asyncio.TimeoutError:
                errors[key]["timeout"] += 1
                conn.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors[key][f"connection ({type(exc).__name__})"] += 1
                conn.close()
            except (ValueError, KeyError, TypeError) as exc:
                errors[key]["bad body"] += 1
                examples.setdefault(f"{key} bad body", f"{path}: {exc!r}")
            await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
        conn.close()

    async def main() -> dict[str, Any]:
        tasks = [asyncio.create_task(client(i)) for i in range(count)]
        probe: dict[str, Any] = {}
        if with_probe:
            tasks.append(asyncio.create_task(ingest_probe(side, port, headers, redis_url,
                                                          clock_floor, start_at, stop_at,
                                                          probe)))
        await asyncio.gather(*tasks)
        return probe

    probe = asyncio.run(main())
    results.put({"kind": "api", "latencies": latencies,
                 "errors": {k: dict(v) for k, v in errors.items()}, "examples": examples,
                 "probe": probe})


async def ingest_probe(side: str, port: int, headers: dict[str, str], redis_url: str,
                       clock_floor: int, start_at: float, stop_at: float,
                       out: dict[str, Any]) -> None:
    """Event-to-API lag: publish a task-received for a new id, poll its detail."""
    from celery import Celery
    from celery.events import EventDispatcher

    lags: list[float] = []
    misses = 0
    app = Celery(broker=redis_url)
    app.clock.adjust(clock_floor)  # see produce() in bench_load.py
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    conn = app.connection_for_write()
    dispatcher = await loop.run_in_executor(
        executor, lambda: EventDispatcher(conn, hostname=WORKERS[0], enabled=True))
    http = HttpConn(port, headers)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    while time.time() < stop_at:
        task_id = f"probe-{uuidlib.uuid4()}"
        path = f"{API}/tasks/{task_id}" if side == "ours" else f"/api/task/info/{task_id}"
        published = time.time()
        await loop.run_in_executor(executor, functools.partial(
            dispatcher.send, "task-received", uuid=task_id, name="bench.probe", args="()",
            kwargs="{}", retries=0, root_id=task_id, parent_id=None))
        deadline = published + PROBE_TIMEOUT_S
        seen = None
        while time.time() < deadline:
            try:
                status, _ = await asyncio.wait_for(http.get(path),
                                                   max(0.1, deadline - time.time()))
            except asyncio.TimeoutError:
                http.close()
                break
            except (OSError, asyncio.IncompleteReadError):
                http.close()
                await asyncio.sleep(0.05)
                continue
            if status == 200:
                seen = time.time()
                break
            await asyncio.sleep(0.02)
        if seen is None:
            misses += 1
        else:
            lags.append(seen - published)
        await asyncio.sleep(max(0.0, PROBE_EVERY_S - (time.time() - published)))
    http.close()
    await loop.run_in_executor(executor, dispatcher.close)
    await loop.run_in_executor(executor, conn.release)
    executor.shutdown(wait=False)
    out.update(lags=lags, misses=misses)


# -- feed holders (ours) -----------------------------------------------------------------------

TYPE_RE = re.compile(rb'^\{"type":"([a-z_]+)"')
SEQ_RE = re.compile(rb'"seq":(\d+)')


def feed_clients(port: int, token: str, count: int, first_index: int, start_at: float,
                 stop_at: float, results: Any, subscribe: dict[str, Any] | None = None) -> None:
    """Raw asyncio WebSocket clients (bench_live.py's: Tornado's own client
    costs more CPU than the server on 2 cores). Frames are walked, not parsed;
    every ``FEED_PROBE_EVERY``-th client parses ``tasks`` and ``view`` messages
    for latency. ``subscribe``: the message each sends once upgraded (the
    page's window subscription), or None to take every change."""
    path = f"{API}/ws"
    subscribe_frame = ws_client_text(json.dumps(subscribe)) if subscribe else b""
    stats: dict[str, Any] = {"connected": 0, "reconnects": 0, "messages": Counter(),
                             "bytes": 0, "bytes_by_type": Counter(), "updates": 0, "latencies": [],
                             "first_snapshot_s": [], "errors": Counter(), "held_at_stop": 0,
                             "examples": []}
    live: set[Any] = set()  # upgraded
    opened: set[Any] = set()  # connected, upgrade not answered yet

    class FeedClient(asyncio.Protocol):
        def __init__(self, probe: bool, reconnect: Any) -> None:
            self.probe = probe
            self.reconnect = reconnect
            self.buf = bytearray()
            self.upgraded = False
            self.last_seq = -1
            self.last_kind = ""
            self.first = True
            self.failed = False
            self.opened = time.time()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            opened.add(self)
            transport.write(ws_upgrade_request(path, "127.0.0.1", port, token))

        def fail(self, reason: str) -> None:
            if not self.failed and time.time() < stop_at:
                self.failed = True
                stats["errors"][reason] += 1
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.buf += data
            buf = self.buf
            if not self.upgraded:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not buf.startswith(b"HTTP/1.1 101"):
                    self.fail(f"upgrade refused ({bytes(buf[9:12]).decode(errors='replace')})")
                    return
                self.upgraded = True
                if subscribe_frame:
                    self.transport.write(subscribe_frame)
                stats["connected"] += 1
                opened.discard(self)
                live.add(self)
                del buf[:end + 4]
            now = time.time()
            in_window = start_at <= now < stop_at
            offset = 0
            while (frame := ws_frame(buf, offset)) is not None:
                opcode, start, length = frame
                offset = start + length
                if opcode == 0x1:
                    prefix = bytes(buf[start:start + 64])
                    match = TYPE_RE.match(prefix)
                    kind = match.group(1).decode() if match else "?"
                    seq_match = SEQ_RE.search(prefix)
                    seq = int(seq_match.group(1)) if seq_match else -1
                    if seq <= self.last_seq:
                        stats["errors"]["seq not increasing"] += 1
                        if len(stats["examples"]) < 5:
                            stats["examples"].append(
                                f"seq {seq} ({kind}) after {self.last_seq} ({self.last_kind})")
                    self.last_seq = seq
                    self.last_kind = kind
                    if self.first:
                        self.first = False
                        if kind != "snapshot":
                            stats["errors"][f"first message {kind}, not snapshot"] += 1
                        stats["first_snapshot_s"].append(now - self.opened)
                    if in_window:
                        stats["messages"][kind] += 1
                        stats["bytes"] += length
                        stats["bytes_by_type"][kind] += length
                        if kind in ("tasks", "view"):
                            payload = bytes(buf[start:start + length])
                            stats["updates"] += payload.count(b'{"id":')
                            if self.probe:
                                message = json.loads(payload)
                                for task in (message["tasks"] if kind == "tasks" else
                                             message["rows"] + message["changed"]):
                                    at = event_time(task)
                                    if at is not None:
                                        stats["latencies"].append(now - at)
                elif opcode == 0x8:
                    code = struct.unpack_from(">H", buf, start)[0] if length >= 2 else 1005
                    self.fail(f"closed by server ({code})")
                    return
                elif opcode == 0x9:
                    payload = bytes(buf[start:start + length])
                    mask = os.urandom(4)
                    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            if offset:
                del buf[:offset]

        def connection_lost(self, exc: Exception | None) -> None:
            live.discard(self)
            opened.discard(self)
            if time.time() < stop_at:
                if not self.failed:
                    self.failed = True
                    stats["errors"]["dropped (connection lost)"] += 1
                self.reconnect()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def connect(index: int) -> None:
            probe = (first_index + index) % FEED_PROBE_EVERY == 0

            def reconnect() -> None:
                async def again() -> None:
                    await asyncio.sleep(1.0)
                    if time.time() < stop_at - 1.0:
                        stats["reconnects"] += 1
                        await connect(index)
                loop.create_task(again())

            try:
                await loop.create_connection(lambda: FeedClient(probe, reconnect),
                                             "127.0.0.1", port)
            except OSError as exc:
                stats["errors"][f"connect ({type(exc).__name__})"] += 1
                reconnect()

        for i in range(count):
            await connect(i)
            if i % 50 == 49:
                await asyncio.sleep(0.02)  # don't overflow the accept queue
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        stats["held_at_stop"] = len(live)
        # Still waiting for the upgrade, or upgraded but never sent a snapshot
        unanswered = len(opened)
        silent = sum(1 for c in live if c.first)
        if unanswered:
            stats["errors"]["upgrade not answered by the end"] += unanswered
        if silent:
            stats["errors"]["no snapshot by the end"] += silent
        for client in [*live, *opened]:
            client.transport.close()
        await asyncio.sleep(0.2)

    asyncio.run(main())
    stats["messages"] = dict(stats["messages"])
    stats["errors"] = dict(stats["errors"])
    results.put({"kind": "feed", **stats})


# -- Flower's UI polling (the baseline for feed holders) -----------------------------------------


def datatable_path(columns: list[str], draw: int) -> str:
    """What Flower's tasks page asks for: first 15 rows, newest received first."""
    sort = columns.index("received") if "received" in columns else 0
    params: list[tuple[str, Any]] = [("draw", draw)]
    for i, name in enumerate(columns):
        params += [(f"columns[{i}][data]", name), (f"columns[{i}][searchable]", "true"),
                   (f"columns[{i}][orderable]", "true")]
    params += [("order[0][column]", sort), ("order[0][dir]", "desc"), ("start", 0),
               ("length", 15), ("search[value]", ""), ("search[regex]", "false")]
    return "/tasks/datatable?" + urlencode(params)


def poll_clients(port: int, columns: list[str], count: int, first_index: int, poll_s: float,
                 start_at: float, stop_at: float, timeout_s: float, results: Any) -> None:
    stats: dict[str, Any] = {"latencies_rtt": [], "responses": 0, "bytes": 0, "updates": 0,
                             "latencies": [], "errors": Counter(), "unmeasured": 0}

    async def client(index: int) -> None:
        probe = (first_index + index) % FEED_PROBE_EVERY == 0
        conn = HttpConn(port, {"Accept": "application/json",
                               "X-Requested-With": "XMLHttpRequest"})
        previous: set[tuple[str, str]] | None = None
        draw = 0
        await asyncio.sleep(random.random() * poll_s)
        while time.time() < stop_at:
            draw += 1
            began = time.time()
            t = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.get(datatable_path(columns, draw)),
                                                      timeout_s)
                elapsed = time.perf_counter() - t
                if status != 200:
                    stats["errors"][f"HTTP {status}"] += 1
                else:
                    rows = json.loads(body)["data"]
                    now = time.time()
                    if start_at <= began < stop_at:
                        stats["latencies_rtt"].append(elapsed)
                        stats["responses"] += 1
                        stats["bytes"] += len(body)
                        seen = {(r.get("uuid"), r.get("state")) for r in rows}
                        if previous is not None:
                            fresh = seen - previous
                            stats["updates"] += len(fresh)
                            if probe:
                                by_id = {r.get("uuid"): r for r in rows}
                                for uuid, _ in fresh:
                                    at = event_time(by_id[uuid])
                                    if at is not None:
                                        stats["latencies"].append(now - at)
                        previous = seen
                    else:
                        stats["unmeasured"] += 1
            except asyncio.TimeoutError:
                stats["errors"]["timeout"] += 1
                conn.close()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                stats["errors"][f"connection ({type(exc).__name__})"] += 1
                conn.close()
            except (ValueError, KeyError, TypeError):
                stats["errors"]["bad body"] += 1
            await asyncio.sleep(max(0.0, poll_s - (time.time() - began)))
        conn.close()

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(count)))

    asyncio.run(main())
    stats["errors"] = dict(stats["errors"])
    results.put({"kind": "poll", **stats})
