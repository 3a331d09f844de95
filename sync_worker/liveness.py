"""Which Celery workers are alive, from their heartbeats, counting only the
time we could have heard them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WorkerLiveness:
    """Which workers are alive, from their heartbeats (thread-safe).

    A worker's silence only counts while we could have heard it. Time during
    which our own event connection was down, or stalled (nothing received for
    longer than ``max_quiet_seconds``, although the stream pings when idle),
    is deafness, not evidence: when hearing resumes every worker's clock is
    moved forward by it, and while it lasts nobody is declared lost. Without
    that, a partition between us and the broker longer than
    ``lost_after_seconds`` would fail the running tasks of every healthy
    worker.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_quiet_seconds: float | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seen: dict[str, float] = {}
        self._offline: dict[str, float] = {}
        self._listening_since: float | None = None
        self._max_quiet = max_quiet_seconds   # None: the stream cannot tell (no pings)
        self._heard_at: float | None = None   # our stream last received something
        self._deaf_since: float | None = None  # connection lost at (last heard) ...

    def _shift(self, seconds: float) -> None:
        """The last ``seconds`` were deaf: they do not count as anyone's silence."""
        if seconds <= 0:
            return
        for clocks in (self._last_seen, self._offline):
            for name in clocks:
                clocks[name] += seconds
        if self._listening_since is not None:
            self._listening_since += seconds

    def listening(self) -> None:
        """(Re)subscribed: we hear again."""
        with self._lock:
            now = self._clock()
            if self._listening_since is None:
                self._listening_since = now
            if self._deaf_since is not None:
                self._shift(now - self._deaf_since)
                self._deaf_since = None
            self._heard_at = now

    def expect_hearing_every(self, seconds: float | None) -> None:
        """The stream proves itself alive (events or ping replies) at least
        this often; longer quiet is a stall. None: it cannot tell."""
        with self._lock:
            self._max_quiet = seconds

    def connection_lost(self) -> None:
        with self._lock:
            if self._deaf_since is None:
                self._deaf_since = self._heard_at if self._heard_at is not None \
                    else self._clock()

    def heard(self) -> None:
        """The event stream received something (events, or a reply to its ping)."""
        with self._lock:
            now = self._clock()
            if self._deaf_since is None and self._heard_at is not None and \
                    self._max_quiet is not None and now - self._heard_at > self._max_quiet:
                self._shift(now - self._heard_at)    # a stall, not a quiet minute
            self._heard_at = now

    def seen(self, hostname: str) -> None:
        with self._lock:
            self._last_seen[hostname] = self._clock()
            self._offline.pop(hostname, None)

    def went_offline(self, hostname: str) -> None:
        with self._lock:
            self._offline[hostname] = self._clock()

    def _deaf(self, now: float) -> bool:
        if self._deaf_since is not None:
            return True
        return self._max_quiet is not None and self._heard_at is not None and \
            now - self._heard_at > self._max_quiet

    def is_lost(self, hostname: str | None, *, lost_after_seconds: float,
                offline_grace_seconds: float = 2.0) -> bool:
        """True when ``hostname`` is known to be gone: it said goodbye, its
        heartbeats stopped for ``lost_after_seconds``, or we have listened
        that long without hearing from it at all. Never while we are deaf."""
        if not hostname:
            return False
        now = self._clock()
        with self._lock:
            if self._deaf(now):
                return False
            offline_at = self._offline.get(hostname)
            if offline_at is not None:
                return now - offline_at >= offline_grace_seconds
            last = self._last_seen.get(hostname)
            if last is not None:
                return now - last >= lost_after_seconds
            since = self._listening_since
            return since is not None and now - since >= lost_after_seconds

    def known(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_seen)
