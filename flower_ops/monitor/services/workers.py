"""Worker health from heartbeats (events) and cached inspect replies.

Inspect broadcasts are slow (they wait for every worker's reply); they run in
the background on a timer and requests are answered from the cache, with its
age, never waiting on a broadcast.

``probed`` holds the replies of our own ``flower_ops_stats`` command
(``health/probe.py``'s ``WorkerProbe.replies``): current RSS per process,
active and reserved counts.
Workers that do not run ``instrument(app)`` never answer it; for them memory
is Celery's ``rusage.maxrss`` (labelled ``max_rss``).

A worker's ``active`` is the number of its tasks the task index holds in
STARTED (``RunningTasks``): the same source, at the same moment, as the
STARTED count of ``/stats`` and the task list, so the numbers a screen shows
side by side add up. (A heartbeat's own ``active`` is up to 2 s old and from
another moment for every worker; it still drives the saturation rule.)
Pools are named as Celery's ``-P`` option names them (``prefork``,
``threads``...), the class path being kept as ``pool.class``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from celery.concurrency import ALIASES as POOL_ALIASES

from flower_ops.core.times import iso, seconds
from flower_ops.monitor.services.worker_arrivals import WorkerArrivals

# A probe reply older than this is not used for live counts
PROBE_FRESH_SECONDS = 60.0
RUNNING_STATE = "STARTED"

# "celery.concurrency.prefork:TaskPool" -> "prefork": the first alias wins
# ("processes" is prefork's older second name)
POOL_NAMES: dict[str, str] = {}
for _name, _path in POOL_ALIASES.items():
    if _path:
        POOL_NAMES.setdefault(_path, _name)


def pool_name(implementation: str | None) -> str | None:
    """Celery's name of a pool class (``prefork``, ``threads``, ``solo``,
    ``eventlet``, ``gevent``); a custom pool keeps its class path."""
    if not implementation:
        return None
    return POOL_NAMES.get(implementation, implementation)


class RunningTasks:
    """The index's STARTED tasks by worker, kept as the index syncs.

    ``observe`` is a task-index observer (state changes), ``forget_missing``
    a change listener (tasks Flower's memory dropped); both run inside
    ``TaskIndex.sync`` on the IOLoop thread, so after every sync the counts
    here add up to the index's STARTED count. Reads never sync: a snapshot
    that reads ``/stats`` and then the workers sees one moment.
    """

    def __init__(self, *, indexed: Callable[[str], object | None]) -> None:
        self._indexed = indexed            # the index's sort_key: None once dropped
        self._worker_of: dict[str, str | None] = {}
        self._counts: dict[str | None, int] = {}

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        if task.state == RUNNING_STATE:
            worker = getattr(getattr(task, "worker", None), "hostname", None)
            self._drop(uuid)
            self._worker_of[uuid] = worker
            self._counts[worker] = self._counts.get(worker, 0) + 1
        elif old_state == RUNNING_STATE:
            self._drop(uuid)

    def forget_missing(self, changed: set[str]) -> None:
        for uuid in self._worker_of.keys() & changed:
            if self._indexed(uuid) is None:
                self._drop(uuid)

    def _drop(self, uuid: str) -> None:
        if uuid not in self._worker_of:
            return
        worker = self._worker_of.pop(uuid)
        left = self._counts[worker] - 1
        if left:
            self._counts[worker] = left
        else:
            del self._counts[worker]

    def count(self, hostname: str) -> int:
        return self._counts.get(hostname, 0)


class WorkerService:
    def __init__(self, *, state: Any, inspected: Mapping[str, dict[str, Any]],
                 probed: Mapping[str, dict[str, Any]], running: RunningTasks,
                 arrivals: WorkerArrivals | None = None) -> None:
        self.state = state
        self.inspected = inspected
        self.probed = probed
        self.running = running
        self.arrivals = arrivals

    def _probe(self, hostname: str, now: float | None = None) -> dict[str, Any] | None:
        reply = self.probed.get(hostname)
        if not reply:
            return None
        received = reply.get("received_at") or 0.0
        if (now or time.time()) - received > PROBE_FRESH_SECONDS:
            return None
        return reply

    def pool_usage(self, hostname: str, worker: Any) -> tuple[int | None, int | None]:
        """(busy pool slots, pool size) from the freshest source at hand."""
        probe = self._probe(hostname)
        stats = (self.inspected.get(hostname) or {}).get("stats") or {}
        slots = (stats.get("pool") or {}).get("max-concurrency")
        if probe is not None:
            slots = slots or (probe.get("pool") or {}).get("max_concurrency")
        # Heartbeats (every 2 s) carry the active count; the probe is slower
        active = getattr(worker, "active", None)
        if active is None and probe is not None:
            active = probe.get("active")
        return active, slots

    def reserved_count(self, hostname: str) -> int | None:
        probe = self._probe(hostname)
        if probe is not None:
            return probe.get("reserved")
        reserved = (self.inspected.get(hostname) or {}).get("reserved")
        return len(reserved) if isinstance(reserved, list) else None

    def consumers_known(self) -> bool:
        """True once every live worker has answered ``active_queues``."""
        for hostname, worker in list(self.state.workers.items()):
            if worker.alive and "active_queues" not in (self.inspected.get(hostname) or {}):
                return False
        return True

    def hostnames(self) -> list[str]:
        return sorted(set(self.state.workers.keys()) | set(self.inspected.keys()))

    def consumers_by_queue(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for hostname, info in list(self.inspected.items()):
            worker = self.state.workers.get(hostname)
            if worker is not None and not worker.alive:
                continue
            for queue in info.get("active_queues") or ():
                name = queue.get("name")
                if name:
                    counts[name] = counts.get(name, 0) + 1
        return counts

    def queue_names(self) -> set[str]:
        names: set[str] = set()
        for info in list(self.inspected.values()):
            for queue in info.get("active_queues") or ():
                if queue.get("name"):
                    names.add(queue["name"])
        return names

    def describe(self, hostname: str, now: float) -> dict[str, Any]:
        worker = self.state.workers.get(hostname)
        info = self.inspected.get(hostname, {})
        stats = info.get("stats") or {}
        pool = stats.get("pool") or {}
        heartbeats = list(getattr(worker, "heartbeats", None) or ())
        last_heartbeat = heartbeats[-1] if heartbeats else None
        alive = bool(worker is not None and worker.alive)
        probe = self._probe(hostname, now)
        memory = probe if probe and probe.get("rss_bytes") else info.get("flower_ops_memory")
        if memory:
            memory_info = {"rss_bytes": memory.get("rss_bytes"), "kind": "rss",
                           "processes": memory.get("processes"),
                           "measured_at": iso(memory.get("timestamp"))}
        else:
            maxrss_kb = (stats.get("rusage") or {}).get("maxrss")
            memory_info = {"rss_bytes": int(maxrss_kb) * 1024 if maxrss_kb else None,
                           "kind": "max_rss"}
        inspected_at = info.get("timestamp")
        # Its STARTED tasks in the index; unknown for a worker that sends no events
        active = self.running.count(hostname) if worker is not None else None
        processed = getattr(worker, "processed", None) if worker is not None else None
        if processed is None and stats.get("total"):
            processed = sum(stats["total"].values())
        probe_pool = (probe or {}).get("pool") or {}
        max_concurrency = pool.get("max-concurrency") or probe_pool.get("max_concurrency")
        implementation = pool.get("implementation") or probe_pool.get("implementation")
        return {
            "hostname": hostname,
            "status": "online" if alive else "offline",
            "active": active,
            "reserved": self.reserved_count(hostname),
            "processed": processed,
            "loadavg": getattr(worker, "loadavg", None) if worker is not None else None,
            "memory": memory_info,
            "pool": {
                "implementation": pool_name(implementation),
                "class": implementation,
                "max_concurrency": max_concurrency,
                "processes": pool.get("processes"),
            },
            "max_concurrency": max_concurrency,
            "queues": sorted(q.get("name") for q in info.get("active_queues") or ()
                             if q.get("name")),
            "last_heartbeat": iso(last_heartbeat),
            "offline_since": (iso(worker.heartbeat_expires)
                              if worker is not None and not alive and heartbeats else None),
            "heartbeat_age_seconds": seconds(now - last_heartbeat) if last_heartbeat else None,
            "software": {"identity": getattr(worker, "sw_ident", None),
                         "version": getattr(worker, "sw_ver", None)} if worker else None,
            "inspected_at": iso(inspected_at),
            "inspect_age_seconds": seconds(now - inspected_at) if inspected_at else None,
        }

    def list(self) -> dict[str, Any]:
        if self.arrivals is not None:
            # a worker back under a new pid: its old replies go before anyone reads them
            self.arrivals.note()
        now = time.time()
        return {"workers": [self.describe(h, now) for h in self.hostnames()]}

    def counts(self) -> dict[str, int]:
        online = sum(1 for w in self.state.workers.values() if w.alive)
        total = len(set(self.state.workers.keys()) | set(self.inspected.keys()))
        return {"online": online, "offline": total - online, "total": total}
