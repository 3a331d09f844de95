"""The ``flower_ops_stats`` inspect command, run inside instrumented workers.

``instrument(app)`` registers it. The monitor broadcasts it on a timer (see
``probe.py``) and gets, per worker: the current RSS of the worker and of
each pool process (read from ``/proc``, no extra dependency), its active and
reserved task counts, and its pool. Celery's own ``stats`` only has
``rusage.maxrss``, a high-water mark of the main process.
"""
from __future__ import annotations

import os
import time
from typing import Any

COMMAND_NAME = "flower_ops_stats"
_registered = False


def rss_bytes(pid: int) -> int | None:
    """Current resident set size of ``pid``, or None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            fields = handle.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def worker_stats(state: Any) -> dict[str, Any]:
    from celery.worker import state as worker_state

    consumer = getattr(state, "consumer", None)
    pool = getattr(consumer, "pool", None)
    try:
        info = dict(pool.info) if pool is not None else {}
    except Exception:  # noqa: BLE001 - a pool mid-restart; report what we can
        info = {}
    processes = [{"pid": os.getpid(), "role": "main", "rss_bytes": rss_bytes(os.getpid())}]
    processes.extend({"pid": pid, "role": "pool", "rss_bytes": rss_bytes(pid)}
                     for pid in info.get("processes") or ()
                     if isinstance(pid, int) and pid != os.getpid())
    known = [p["rss_bytes"] for p in processes if p["rss_bytes"] is not None]
    active = set(worker_state.active_requests)
    reserved = set(worker_state.reserved_requests) - active
    return {
        "rss_bytes": sum(known) if known else None,
        "processes": processes,
        "active": len(active),
        "reserved": len(reserved),
        "pool": {"implementation": info.get("implementation"),
                 "max_concurrency": info.get("max-concurrency")},
        "timestamp": time.time(),
    }


def register() -> None:
    """Register the command in this process's remote-control panel (idempotent)."""
    # Celery's remote-control panel is process-wide: register once per process
    global _registered  # noqa: PLW0603
    if _registered:
        return
    from celery.worker.control import inspect_command

    @inspect_command(name=COMMAND_NAME)
    def flower_ops_stats(state: Any, **_: Any) -> dict[str, Any]:
        return worker_stats(state)

    _registered = True
