"""Broadcasts ``flower_ops_stats`` to the workers on a timer and keeps replies.

The broadcast waits for replies, so it runs on an executor thread; replies
are stored on the IOLoop thread. One broadcast at a time; when the broker is
unreachable the next attempt backs off (capped, with jitter) instead of
piling up.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from flower_ops.worker_stats import COMMAND_NAME

logger = logging.getLogger(__name__)


class WorkerProbe:
    def __init__(self, *, capp: Any, run_blocking: Callable[..., Any], timeout_seconds: float,
                 has_live_workers: Callable[[], bool],
                 backoff_max_seconds: float = 120.0) -> None:
        self.capp = capp
        self.run_blocking = run_blocking
        self.timeout_seconds = timeout_seconds
        self.has_live_workers = has_live_workers
        self.replies: dict[str, dict[str, Any]] = {}
        self.last_error: str | None = None
        self._running = False
        self._failures = 0
        self._next_at = 0.0
        self._backoff_max = backoff_max_seconds

    def broadcast(self) -> dict[str, dict[str, Any]]:
        """Blocking: one broadcast, the replies by hostname."""
        answers = self.capp.control.broadcast(COMMAND_NAME, reply=True,
                                              timeout=self.timeout_seconds) or []
        return {hostname: reply for answer in answers for hostname, reply in (answer or {}).items()
                if isinstance(reply, dict) and "error" not in reply}

    def tick(self) -> None:
        """Timer callback on the IOLoop thread."""
        now = time.monotonic()
        if self._running or now < self._next_at or not self.has_live_workers():
            return
        self._running = True
        future = self.run_blocking(self.broadcast)
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        # Runs on the IOLoop thread: run_blocking's future belongs to the loop.
        self._running = False
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._failures += 1
            delay = min(self._backoff_max, 2.0 ** min(self._failures, 10))
            self._next_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
            self.last_error = f"{type(error).__name__}: {error}"
            logger.warning("worker stats broadcast failed (%s); next try in about %.0fs",
                           self.last_error, delay)
            return
        self._failures = 0
        self.last_error = None
        received = time.time()
        for hostname, reply in future.result().items():
            self.replies[hostname] = {**reply, "received_at": received}
