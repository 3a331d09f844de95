"""Optional webhook: each raised and resolved alert as a JSON POST.

``notify`` only appends to a bounded queue (the oldest entry is dropped when
full), so alerting never waits on the network. One coroutine on the IOLoop
delivers in order with Tornado's ``AsyncHTTPClient``; a failed delivery
(error or non-2xx) is retried with capped exponential backoff and full
jitter, up to ``max_attempts``, then dropped with a log line.

Behind several monitors each change is first claimed in the group's ledger
(``deliveries.py``, through ``claim``): a change another monitor already
delivers is skipped and counted in ``left_to_peers``.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from tornado import gen
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.locks import Event

from flower_ops.core.times import now_iso

logger = logging.getLogger(__name__)

WEBHOOK_EVENTS = ("raised", "resolved")


class WebhookNotifier:
    def __init__(self, *, url: str, queue_size: int = 1000, timeout_seconds: float = 5.0,
                 max_attempts: int = 8, backoff_initial_seconds: float = 0.5,
                 backoff_max_seconds: float = 60.0,
                 claim: Callable[[str, str, str], Awaitable[bool]] | None = None) -> None:
        self.url = url
        self._claim = claim
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_size)
        self._wakeup = Event()
        self._stopped = False
        self.delivered = 0
        self.dropped = 0
        self.failed_attempts = 0
        self.left_to_peers = 0

    def notify(self, event: str, alert: dict[str, Any]) -> None:
        """An alert listener (IOLoop thread); never blocks."""
        if event not in WEBHOOK_EVENTS or self._stopped:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append({"event": event, "alert": alert})
        self._wakeup.set()

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): capped, full jitter."""
        cap = min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)

    async def run(self) -> None:
        client = AsyncHTTPClient(force_instance=True, max_clients=2)
        try:
            while not self._stopped:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = self._queue.popleft()
                if await self._ours(item):
                    await self._deliver(client, item)
                else:
                    self.left_to_peers += 1
        finally:
            client.close()

    async def _ours(self, item: dict[str, Any]) -> bool:
        """Whether this monitor delivers ``item``: no ledger, or its claim
        succeeded, or the ledger could not be asked (rather twice than never)."""
        if self._claim is None:
            return True
        alert = item["alert"]
        try:
            return await self._claim(item["event"], str(alert.get("kind")),
                                     str(alert.get("subject")))
        except Exception as exc:  # noqa: BLE001 - delivered anyway, at worst twice
            logger.warning("alert webhook: the monitors' delivery ledger could not be asked "
                           "(%s); delivering %s %s", exc, item["event"], alert.get("id"))
            return True

    async def _deliver(self, client: AsyncHTTPClient, item: dict[str, Any]) -> None:
        for attempt in range(1, self.max_attempts + 1):
            if self._stopped:
                return
            item["sent_at"] = now_iso()
            item["attempt"] = attempt
            request = HTTPRequest(self.url, method="POST", body=json.dumps(item, default=str),
                                  headers={"Content-Type": "application/json",
                                           "User-Agent": "flower-ops-alerts"},
                                  connect_timeout=self.timeout_seconds,
                                  request_timeout=self.timeout_seconds)
            try:
                await client.fetch(request)
            except HTTPClientError as exc:
                reason = f"HTTP {exc.code}"
            except Exception as exc:  # noqa: BLE001 - any network failure is retried
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self.delivered += 1
                return
            self.failed_attempts += 1
            if attempt == self.max_attempts:
                break
            delay = self.backoff_seconds(attempt)
            logger.warning("alert webhook failed (%s), retry %d in %.1fs", reason, attempt, delay)
            await self._sleep(delay)
        self.dropped += 1
        logger.error("alert webhook gave up after %d attempts: %s %s", self.max_attempts,
                     item["event"], item["alert"].get("id"))

    async def _sleep(self, seconds: float) -> None:
        # Wakes early on stop(); a notify() during the wait does not cut it short
        deadline = time.monotonic() + seconds
        while not self._stopped and time.monotonic() < deadline:
            await gen.sleep(min(0.5, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()
