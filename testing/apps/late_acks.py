"""A worker app with late acks and a prefetch of 4 per process, so a busy
worker holds unacked messages (``-A testing.apps.late_acks``).

Its one task, ``queues.slow``, sleeps. The broker comes from ``REDIS_URL``
(a RabbitMQ URL works too).
"""
from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("queues-tests", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
             set_as_current=False)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, task_ignore_result=True,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="queues.slow")
def slow(seconds: float) -> None:
    time.sleep(seconds)
