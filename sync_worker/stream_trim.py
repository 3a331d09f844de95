"""The leader's once-only stream duties (one replica, not each).

Every ``stream_trim_interval_seconds``: trim the stream below the oldest
entry some group still needs (``XTRIM MINID ~``: the oldest pending entry,
or the first one not yet delivered), which keeps it short in normal
operation (the producers' ``MAXLEN ~`` is the cap when nobody reads); remove
the consumers of replicas that are gone (idle long, nothing pending: a
consumer with pending entries is left for the others to claim from); and
publish the stream's length, lag and pending count as metrics.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from sync_worker.config import SyncWorkerConfig
from sync_worker.metrics import SyncMetrics
from sync_worker.stream import StreamConsumer

logger = logging.getLogger(__name__)


def _id(value: Any) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class StreamJanitor:
    def __init__(self, config: SyncWorkerConfig, *, consumer: StreamConsumer,
                 metrics: SyncMetrics) -> None:
        self._config = config
        self._consumer = consumer
        self._metrics = metrics
        self.trimmed = 0
        # a live replica reads every second; idle this long means gone
        self._gone_ms = int(max(60.0, 4 * config.claim_idle_seconds) * 1000)

    def run(self, term: threading.Event) -> None:
        while not term.wait(self._config.stream_trim_interval_seconds):
            try:
                self.tidy()
            except redis.RedisError as exc:
                logger.warning("stream maintenance skipped: %s", exc)

    def tidy(self) -> None:
        client, target = self._consumer.client, self._consumer.target
        if client is None or target is None:
            return
        key = target.key
        try:
            groups = client.xinfo_groups(key)
        except redis.ResponseError:
            return                      # no stream yet
        keep: tuple[int, int] | None = None
        ours: dict[str, Any] | None = None
        for group in groups:
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            last = _id(group["last-delivered-id"])
            needed = (last[0], last[1] + 1)
            if group["pending"]:
                summary = client.xpending(key, name)
                if summary.get("min"):
                    needed = min(needed, _id(summary["min"]))
            keep = needed if keep is None else min(keep, needed)
            if name == self._consumer.group:
                ours = group
        if keep is not None and keep > (0, 1):
            removed = client.xtrim(key, minid=f"{keep[0]}-{keep[1]}", approximate=True)
            self.trimmed += int(removed or 0)
        length = client.xlen(key)
        self._metrics.stream_length.set(length)
        if ours is not None:
            self._metrics.stream_pending.set(ours["pending"])
            lag = ours.get("lag")
            if lag is not None:
                self._metrics.stream_lag.set(lag)
            self._remove_gone(client, key)

    def _remove_gone(self, client: Any, key: str) -> None:
        group = self._consumer.group
        for consumer in client.xinfo_consumers(key, group):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if name == self._consumer.name or consumer["pending"] or \
                    consumer["idle"] < self._gone_ms:
                continue
            client.xgroup_delconsumer(key, group, name)
            logger.info("stream: removed consumer %s of a replica that is gone "
                        "(idle %.0fs, nothing pending)", name, consumer["idle"] / 1000)
