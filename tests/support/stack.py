"""A worker and a monitor on this session's Redis db: the stack most
end-to-end tests run against."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from tests.support.processes import CeleryWorker, Monitor
from tests.support.services import RedisService

FAST_REFRESH = {"FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "2",
                "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5"}


@contextlib.contextmanager
def running_stack(redis_service: RedisService, redis_db: int, *,
                  monitor_env: Mapping[str, str] | None = None,
                  concurrency: int = 2) -> Iterator[tuple[Any, CeleryWorker, Monitor]]:
    """(celery app, worker, monitor), all pointed at a flushed ``redis_db``."""
    redis_service.client(redis_db).flushdb()
    broker_url = redis_service.url(redis_db)
    os.environ["REDIS_URL"] = broker_url
    from tests.apps import automation

    automation.app.conf.broker_url = broker_url
    automation.app.conf.result_backend = broker_url
    worker = CeleryWorker(broker_url, concurrency=concurrency).start()
    monitor = Monitor(broker_url, env={**FAST_REFRESH, **(monitor_env or {})}).start()
    try:
        worker.wait_ready(automation.app)
        monitor.wait_ready()
        yield automation.app, worker, monitor
    finally:
        worker.stop()
        monitor.stop()
        redis_service.client(redis_db).flushdb()
