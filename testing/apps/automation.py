"""The Celery app real workers and monitors run in tests, benchmarks and
suites (``celery -A testing.apps.automation ...``), with ``instrument(app)``
applied as a user's app has it.

Its broker comes from ``REDIS_URL`` (each child process gets its own); in
the calling process ``testing.apps.automation_app`` points it at a session's
Redis db.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

from flower_ops import instrument

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("automation", broker=REDIS_URL,
             backend=os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL))
app.conf.update(
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    result_extended=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)
instrument(app)


@app.task(name="automation.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="automation.fail")
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task(name="automation.sleep")
def sleep(seconds: float, marker: str | None = None) -> float:
    time.sleep(seconds)
    if marker:
        Path(marker).write_text("done")
    return seconds


@app.task(name="automation.echo")
def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="automation.flaky", bind=True, max_retries=2, default_retry_delay=0.2)
def flaky(self, succeed_on: int = 2) -> int:  # type: ignore[no-untyped-def]
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries + 1} failed"))
    return self.request.retries


# Canvas steps (workflow tests): a step adds to the running total and fails
# while its flag file exists, so a test can break a chain at one step and
# mend it before a retry.
@app.task(name="automation.step")
def step(total: int, add: int, fail_flag: str | None = None) -> int:
    if fail_flag and Path(fail_flag).exists():
        raise RuntimeError(f"step +{add} failed: {fail_flag} exists")
    return total + add


@app.task(name="automation.collect")
def collect(results: list[object], marker: str | None = None) -> list[object]:
    if marker:
        with open(marker, "a", encoding="utf-8") as out:
            out.write("ran\n")
    return list(results)


# One positional parameter: Celery sends it as a task of its own when used as
# an errback (link_error), with the failed task's id (a "new-style" errback,
# one taking request, exc and traceback, runs inside the failing task instead)
@app.task(name="automation.note_failure")
def note_failure(task_id: str, *, marker: str | None = None) -> str:
    if marker:
        with open(marker, "a", encoding="utf-8") as out:
            out.write(f"{task_id}\n")
    return task_id
