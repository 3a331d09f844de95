"""A worker app without ``instrument()`` (``-A testing.apps.plain``): no
``flower_ops_stats`` control command, as a user's app that never added it."""
from __future__ import annotations

import os

from celery import Celery

app = Celery("plain-workers", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
             set_as_current=False)
app.conf.update(worker_send_task_events=True, task_ignore_result=True,
                worker_hijack_root_logger=False)
