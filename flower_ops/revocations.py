"""Revocations that survive worker restarts.

Celery keeps revoked task ids in each worker's memory. A worker that is down
(or not yet started) when ``revoke`` is broadcast never hears of it and would
run the task; Celery's own remedy is ``--statedb``, a file per worker.

The monitor also writes every id it revokes into a Redis sorted set (score =
when); ``instrument(app)`` makes each worker load the recent ones into its
revoked set at start-up (``worker_init``, before it consumes), so a cancelled
task never runs on a worker that missed the broadcast. The store is the
result backend's Redis, else the broker's when that is Redis; with neither,
markers are off and only Celery's own guarantees apply.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

MARKER_KEY = "flower_ops:revoked"
# Celery's own horizon for remembered revokes (celery.worker.state.REVOKE_EXPIRES)
DEFAULT_TTL_SECONDS = 10800.0


def _redis_client(app: Any) -> Any:
    backend = getattr(app, "backend", None)
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "zadd"):
        return client
    url = str(app.conf.broker_url or "")
    if url.split("://", 1)[0] in ("redis", "rediss"):
        import redis

        return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    return None


class RevocationMarkers:
    """The shared set of recently revoked task ids."""

    def __init__(self, app: Any, *, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 key: str = MARKER_KEY) -> None:
        self.app = app
        self.ttl_seconds = ttl_seconds
        self.key = key
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _redis_client(self.app)
        return self._client

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def add(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        client = self.client
        if client is None or not ids:
            return
        now = time.time()
        pipe = client.pipeline()
        pipe.zadd(self.key, dict.fromkeys(ids, now))
        pipe.zremrangebyscore(self.key, "-inf", now - self.ttl_seconds)
        pipe.expire(self.key, int(self.ttl_seconds) + 60)
        pipe.execute()

    def discard(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        client = self.client
        if client is not None and ids:
            client.zrem(self.key, *ids)

    def recent(self) -> list[str]:
        client = self.client
        if client is None:
            return []
        since = time.time() - self.ttl_seconds
        return [m.decode() if isinstance(m, bytes) else str(m)
                for m in client.zrangebyscore(self.key, since, "+inf")]


def load_into_worker(app: Any) -> int:
    """Add the recent markers to this worker's revoked set; returns how many."""
    from celery.worker.state import revoked

    try:
        ids = RevocationMarkers(app).recent()
    except Exception:
        logger.warning("flower-ops: could not load revoked task markers", exc_info=True)
        return 0
    for task_id in ids:
        revoked.add(task_id)
    if ids:
        logger.info("flower-ops: %d revoked task id(s) loaded", len(ids))
    return len(ids)
