"""The Celery app of the Docker image (``celery -A worker ...`` in docker-compose.yml).

A small example: replace this file (mount or copy your own ``worker.py`` over
``/app/worker.py``) or point ``-A`` at your own module. What a real app needs
for Flower Ops is the one ``flower_ops.instrument(app)`` call.
"""
from __future__ import annotations

import os
import random
import time
from datetime import timedelta

from celery import Celery

import flower_ops

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")

app = Celery("worker", broker=REDIS_URL,
             backend=os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    beat_schedule={
        "heartbeat-every-minute": {"task": "ops.heartbeat",
                                   "schedule": timedelta(minutes=1)},
        "cleanup-every-ten-minutes": {"task": "ops.cleanup_tmp",
                                      "schedule": timedelta(minutes=10),
                                      "kwargs": {"older_than_hours": 24}},
    },
)
flower_ops.instrument(app)


@app.task(name="ops.heartbeat")
def heartbeat() -> dict[str, float]:
    return {"at": time.time()}


@app.task(name="ops.cleanup_tmp", bind=True, max_retries=3, retry_backoff=True)
def cleanup_tmp(self, older_than_hours: int = 24) -> dict[str, int]:  # type: ignore[no-untyped-def]
    time.sleep(random.uniform(0.5, 2.0))
    return {"older_than_hours": older_than_hours, "removed": random.randint(0, 40)}
