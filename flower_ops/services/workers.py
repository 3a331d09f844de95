"""Worker health from heartbeats (events) and cached inspect replies.

Inspect broadcasts are slow (they wait for every worker's reply); they run in
the background on a timer and requests are answered from the cache, with its
age, never waiting on a broadcast.
"""
from __future__ import annotations

import time
from typing import Any, Mapping


class WorkerService:
    def __init__(self, *, state: Any, inspected: Mapping[str, dict[str, Any]]) -> None:
        self.state = state
        self.inspected = inspected

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
        memory = info.get("flower_ops_memory")
        if memory:
            memory_info = {"rss_bytes": memory.get("rss_bytes"), "kind": "rss",
                           "processes": memory.get("processes")}
        else:
            maxrss_kb = (stats.get("rusage") or {}).get("maxrss")
            memory_info = {"rss_bytes": int(maxrss_kb) * 1024 if maxrss_kb else None,
                           "kind": "max_rss"}
        inspected_at = info.get("timestamp")
        active = getattr(worker, "active", None) if worker is not None else None
        processed = getattr(worker, "processed", None) if worker is not None else None
        if processed is None and stats.get("total"):
            processed = sum(stats["total"].values())
        return {
            "hostname": hostname,
            "status": "online" if alive else "offline",
            "active": active,
            "processed": processed,
            "loadavg": getattr(worker, "loadavg", None) if worker is not None else None,
            "memory": memory_info,
            "pool": {
                "implementation": pool.get("implementation"),
                "max_concurrency": pool.get("max-concurrency"),
                "processes": pool.get("processes"),
            },
            "max_concurrency": pool.get("max-concurrency"),
            "queues": sorted(q.get("name") for q in info.get("active_queues") or ()
                             if q.get("name")),
            "last_heartbeat": last_heartbeat,
            "heartbeat_age_seconds": round(now - last_heartbeat, 3) if last_heartbeat else None,
            "software": {"identity": getattr(worker, "sw_ident", None),
                         "version": getattr(worker, "sw_ver", None)} if worker else None,
            "inspected_at": inspected_at,
            "inspect_age_seconds": round(now - inspected_at, 3) if inspected_at else None,
        }

    def list(self) -> dict[str, Any]:
        now = time.time()
        return {"workers": [self.describe(h, now) for h in self.hostnames()]}

    def counts(self) -> dict[str, int]:
        online = sum(1 for w in self.state.workers.values() if w.alive)
        total = len(set(self.state.workers.keys()) | set(self.inspected.keys()))
        return {"online": online, "offline": total - online, "total": total}
