"""Inspect a worker the moment it comes online, not at the next periodic inspect.

Flower inspects every worker on a timer (``FLOWER_OPS_INSPECT_INTERVAL_SECONDS``,
10 s by default), so a worker that has just started would have no pool,
concurrency or queues in ``/workers`` for that long. ``WorkerArrivals.tick``
(an IOLoop timer) notes every worker that came online — a hostname not seen
alive before, or a new pid under a known one (a restart) — and asks just those
workers ``stats`` and ``active_queues``, through ``run_blocking``. An inspect
addressed to named workers returns as soon as they have all answered.

A worker announces itself (``worker-online``) a moment before it listens to
broadcasts, so the first question may go unheard: it is asked again at once,
with longer timeouts, then with a capped backoff, and after
``MAX_ATTEMPTS`` it is left to the periodic inspect.

Replies are stored on the IOLoop thread into Flower's own inspect cache
(``flower_app.inspector.workers``), the way Flower stores its replies, so
``WorkerService`` and Flower's pages read them like any other. When a
hostname comes back with a new pid (a restart), what that cache and the
probe held about it described the previous process: it is dropped at once,
so ``/workers`` shows nothing rather than the old pool until the new process
answers. ``WorkerService`` calls ``note`` before it reads, so no
read falls between a worker's return and that drop.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

logger = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 0.1
# Timeouts of the first attempts: short, since the usual reason for no answer
# is a worker that is still starting its broadcast consumer
FIRST_TIMEOUTS_SECONDS = (0.25, 0.5, 1.0)
MAX_ATTEMPTS = 8
# Inspects of arrivals at once (each a thread of the blocking executor while it waits)
MAX_IN_FLIGHT = 2
METHODS = ("stats", "active_queues")


class WorkerArrivals:
    """Inspects workers as they come online. ``tick`` runs on the IOLoop thread."""

    def __init__(self, *, capp: Any, workers: Mapping[str, Any],
                 inspected: MutableMapping[str, dict[str, Any]],
                 probed: MutableMapping[str, dict[str, Any]],
                 run_blocking: Callable[..., Any], timeout_seconds: float,
                 backoff_max_seconds: float = 30.0) -> None:
        self.capp = capp
        self.workers = workers             # Flower's state.workers
        self.inspected = inspected         # Flower's inspector.workers
        self.probed = probed               # WorkerProbe.replies
        self.run_blocking = run_blocking
        self.timeout_seconds = timeout_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._pids: dict[str, Any] = {}    # hostname -> pid of its latest arrival
        self._alive: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._due: dict[str, float] = {}   # hostname -> monotonic time of the next attempt
        self._arrival: dict[str, int] = {}  # hostname -> number of its arrivals
        self._in_flight: set[str] = set()
        self._batches = 0
        self.inspected_count = 0

    def note(self) -> None:
        """Note the workers that came online since the last call (no I/O)."""
        now = time.monotonic()
        for hostname, worker in list(self.workers.items()):
            if not worker.alive:
                if hostname in self._alive:
                    self._alive.discard(hostname)
                    self._attempts.pop(hostname, None)
                    self._due.pop(hostname, None)
                continue
            pid = getattr(worker, "pid", None)
            known = self._pids.get(hostname)
            if pid is not None:
                self._pids[hostname] = pid
            if pid is not None and known is not None and known != pid:
                # A new process under the name: the old replies are not its
                self.inspected.pop(hostname, None)
                self.probed.pop(hostname, None)
            elif hostname in self._alive:
                continue
            self._alive.add(hostname)
            self._arrival[hostname] = self._arrival.get(hostname, 0) + 1
            self._attempts[hostname] = 0
            self._due[hostname] = now

    def tick(self) -> None:
        """Timer callback on the IOLoop thread: note arrivals, ask those due."""
        self.note()
        if self._batches >= MAX_IN_FLIGHT:
            return
        now = time.monotonic()
        due = sorted(h for h, at in self._due.items()
                     if at <= now and h not in self._in_flight)
        if not due:
            return
        attempt = min(self._attempts.get(h, 0) for h in due)
        timeout = (FIRST_TIMEOUTS_SECONDS[attempt] if attempt < len(FIRST_TIMEOUTS_SECONDS)
                   else self.timeout_seconds)
        self._batches += 1
        self._in_flight.update(due)
        asked = {hostname: self._arrival[hostname] for hostname in due}
        future = self.run_blocking(self.inspect, due, timeout)
        future.add_done_callback(lambda f: self._done(asked, f))

    def inspect(self, hostnames: list[str], timeout_seconds: float
                ) -> dict[str, dict[str, Any]]:
        """Blocking: ``{hostname: {method: reply}}`` for those that answered."""
        replies: dict[str, dict[str, Any]] = {}
        asking = list(hostnames)
        for method in METHODS:
            inspect = self.capp.control.inspect(timeout=timeout_seconds, destination=asking)
            answers = getattr(inspect, method)() or {}
            for hostname, reply in answers.items():
                if hostname in asking and reply is not None:
                    replies.setdefault(hostname, {})[method] = reply
            # Who did not answer the first question is not asked the second
            asking = [h for h in asking if h in replies]
            if not asking:
                break
        return replies

    def _done(self, asked: dict[str, int], future: Any) -> None:
        # On the IOLoop thread: run_blocking's future belongs to the loop
        self._batches -= 1
        self._in_flight.difference_update(asked)
        if future.cancelled():
            return
        error = future.exception()
        replies: dict[str, dict[str, Any]] = {}
        if error is not None:
            logger.warning("inspect of new workers %s failed: %s: %s",
                           ", ".join(asked), type(error).__name__, error)
        else:
            replies = future.result()
        now = time.time()
        for hostname, arrival in asked.items():
            if hostname not in self._due or self._arrival.get(hostname) != arrival:
                continue  # offline meanwhile, or restarted: the reply is not this process's
            reply = replies.get(hostname) or {}
            if all(method in reply for method in METHODS):
                self._store(hostname, reply, now)
                self._attempts.pop(hostname, None)
                self._due.pop(hostname, None)
                continue
            attempts = self._attempts[hostname] = self._attempts.get(hostname, 0) + 1
            if attempts >= MAX_ATTEMPTS:
                # Left to the periodic inspect (e.g. remote control disabled)
                self._due.pop(hostname, None)
                continue
            extra = max(0, attempts - len(FIRST_TIMEOUTS_SECONDS))
            delay = min(self.backoff_max_seconds, 2.0 ** extra - 1.0) if extra else 0.0
            self._due[hostname] = time.monotonic() + delay * random.uniform(0.5, 1.0)

    def _store(self, hostname: str, reply: dict[str, Any], now: float) -> None:
        stats = reply["stats"]
        if isinstance(stats, dict):
            # As Flower's own _on_update: its pages cannot render this field
            consumer = stats.get("consumer") or stats
            broker = consumer.get("broker") if isinstance(consumer, dict) else None
            if isinstance(broker, dict):
                broker.pop("alternates", None)
        info = self.inspected.setdefault(hostname, {})
        info.update(reply)
        info["timestamp"] = now
        self.inspected_count += 1
