"""Keeping the garbage collector from stopping the IOLoop.

At 100,000 tasks the monitor holds millions of long-lived objects. CPython
runs a full collection whenever the objects that survived since the last
one reach a quarter of those it holds; with tasks arriving (and old ones
dropped) at a few hundred a second that was a full collection every ~11 s,
each scanning every object for ~1.3 s with the IOLoop stopped: API answers
and feed messages waited behind it (measured by ``./dev suite load``).

``HeapKeeper`` moves what has survived into the permanent generation every
``FREEZE_SECONDS`` (``gc.freeze``), after collecting what is young: a full
collection then scans only what is newer than the last freeze and takes
milliseconds (~20 ms at 300 task lifecycles/s; ~50-80 ms when freezing
every 10 s). Frozen objects are still freed by reference counting (tasks
are acyclic: ``sources/flower_state.AcyclicTask``); only a frozen object that
later becomes part of a reference cycle waits, until the complete collection
that runs every ``FULL_SECONDS`` (one pause of about a second per half hour,
instead of one every ten seconds).
"""
from __future__ import annotations

import gc
import logging
import time

from tornado.ioloop import PeriodicCallback

logger = logging.getLogger(__name__)

FREEZE_SECONDS = 2.0
FULL_SECONDS = 1800.0


class HeapKeeper:
    def __init__(self, *, freeze_seconds: float = FREEZE_SECONDS,
                 full_seconds: float = FULL_SECONDS) -> None:
        self.freeze_seconds = freeze_seconds
        self.full_seconds = full_seconds
        self._timer: PeriodicCallback | None = None
        self._last_full = time.monotonic()
        self.stats = {"freezes": 0, "full_collections": 0, "last_full_ms": 0.0}

    def start(self) -> None:
        self._timer = PeriodicCallback(self.tick, self.freeze_seconds * 1000, jitter=0.1)
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        gc.unfreeze()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_full >= self.full_seconds:
            # Everything again, frozen or not: reclaims cycles among old objects
            started = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            self._last_full = now
            self.stats["full_collections"] += 1
            self.stats["last_full_ms"] = round((time.perf_counter() - started) * 1000, 1)
            logger.debug("full garbage collection took %s ms", self.stats["last_full_ms"])
        else:
            gc.collect()  # only what is newer than the last freeze
        gc.freeze()
        self.stats["freezes"] += 1
