"""Feed snapshots: the shared parts (stats, workers, queues, alerts) and the
task lists per filter, each built once and shared by every client that wants
it at about the same moment. IOLoop thread only."""
from __future__ import annotations

from typing import Any

from tornado.ioloop import IOLoop

from flower_ops.core.errors import Unavailable
from flower_ops.core.times import now_iso
from flower_ops.monitor.live.filters import Filters
from flower_ops.monitor.live.protocol import encode
from flower_ops.monitor.services.queues import QueueService
from flower_ops.monitor.services.stats import StatsService
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.services.workers import WorkerService

PARTS_MAX_AGE_SECONDS = 0.5
NUMBERS_ALERTS = 20


class Snapshots:
    """Snapshot pieces, cached: the shared parts for ``PARTS_MAX_AGE_SECONDS``
    (or until an alert changes), the task lists until the next flush."""

    def __init__(self, *, tasks: TaskQueryService, stats: StatsService,
                 workers: WorkerService, queues: QueueService, io_loop: IOLoop,
                 instance: str = "") -> None:
        self.tasks = tasks
        # the monitor's instance id: seqs are this process's; a resume names it
        self.instance = instance
        self.stats = stats
        self.workers = workers
        self.queues = queues
        self.io_loop = io_loop
        self._parts_cache: tuple[float, str, dict[str, Any]] | None = None
        # The active alerts (id, severity) the last numbers message carried
        self._numbers_alerts: tuple[Any, ...] | None = None
        self._tasks_cache: dict[tuple[Filters, int], str] = {}

    def forget_parts(self) -> None:
        self._parts_cache = None

    def forget_tasks(self) -> None:
        self._tasks_cache.clear()

    def parts(self) -> dict[str, Any]:
        stats = self.stats.stats()
        alerts = stats.get("alerts", [])
        parts: dict[str, Any] = {"stats": stats,
                                 "workers": self.workers.list().get("workers", [])}
        try:
            parts["queues"] = self.queues.list().get("queues", [])
        except Unavailable as exc:
            parts["queues"] = None
            parts["queues_error"] = exc.message
        parts["alerts"] = alerts
        return parts

    def task_list(self, filters: Filters, limit: int) -> dict[str, Any]:
        queries = filters.queries(limit)
        pages = [self.tasks.list_memory(q) for q in queries]
        if len(pages) == 1:
            return {"tasks": pages[0].tasks, "total": pages[0].total}
        merged = sorted((t for p in pages for t in p.tasks), key=task_time, reverse=True)
        return {"tasks": merged[:limit], "total": sum(p.total for p in pages)}

    def tasks_json(self, filters: Filters, limit: int) -> str:
        key = (filters, limit)
        tasks_json = self._tasks_cache.get(key)
        if tasks_json is None:
            tasks_json = self._tasks_cache[key] = encode(self.task_list(filters, limit))
        return tasks_json

    def parts_json(self, *, fresh: bool) -> str:
        now = self.io_loop.time()
        cached = self._parts_cache
        if not fresh and cached is not None and now - cached[0] < PARTS_MAX_AGE_SECONDS:
            return cached[1]
        parts = self.parts()
        parts_json = encode(parts)
        self._parts_cache = (now, parts_json, parts)
        return parts_json

    def message(self, seq: int, parts_json: str, tasks_json: str, filters: Filters,
                resync: bool = False, window: Any = None) -> bytes:
        head: dict[str, Any] = {"type": "snapshot", "seq": seq, "time": now_iso(),
                                "instance": self.instance, "filters": filters.as_json(),
                                "resync": resync}
        head.update(window.as_json() if window is not None else {"mode": "all"})
        # Shared pieces are encoded once, then spliced in.
        return f"{encode(head)[:-1]},{tasks_json[1:-1]},{parts_json[1:]}".encode()

    def numbers(self, seq: int) -> bytes:
        """The snapshot's shared parts (as last built by ``parts_json``), for
        window subscribers: the most severe ``NUMBERS_ALERTS`` alerts (the
        count of all is ``stats.alerts_total``), and only when they differ
        (ids, severities) from the previous numbers message's."""
        assert self._parts_cache is not None
        parts = self._parts_cache[2]
        # stats as in a snapshot but its alerts list, which is ``alerts`` here
        stats = {k: v for k, v in parts["stats"].items() if k != "alerts"}
        message = {"type": "numbers", "seq": seq, "time": now_iso(),
                   **{k: v for k, v in parts.items() if k != "alerts"}, "stats": stats}
        alerts = parts["alerts"][:NUMBERS_ALERTS]
        key = tuple((a.get("id"), a.get("severity")) for a in alerts)
        if key != self._numbers_alerts:
            message["alerts"] = alerts
        self._numbers_alerts = key
        return encode(message).encode()


def shown(summary: dict[str, Any]) -> dict[str, Any]:
    """A task summary as the feed sends it: unknown (null) fields are left out
    (a task's fields only go from unknown to known; every message is smaller)."""
    return {k: v for k, v in summary.items() if v is not None}


def task_time(task: dict[str, Any]) -> str:
    """A presented task's first known instant: ISO 8601 UTC strings of one
    width (``core/times.py``), so they sort as the instants do."""
    return str(task.get("sent") or task.get("received") or task.get("started")
               or task.get("timestamp") or "")
