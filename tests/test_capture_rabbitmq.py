"""Lossless capture on RabbitMQ: a durable queue bound to Celery's event
exchange, declared by the instrumented worker at start-up and read by the
sync workers with acknowledgement after the commit (real RabbitMQ, Redis as
result backend, Celery worker and sync-worker processes)."""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Connection

from testing.processes import CeleryWorker, SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.streams import wait_history_complete
from testing.waiting import wait_for

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


if not _port_open(5672):
    if os.environ.get("FLOWER_OPS_TEST_REQUIRE_RABBITMQ"):
        raise RuntimeError("FLOWER_OPS_TEST_REQUIRE_RABBITMQ is set but no RabbitMQ answers "
                           "on 127.0.0.1:5672")
    pytest.skip("no RabbitMQ on 127.0.0.1:5672", allow_module_level=True)


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"fo-events-{uuid.uuid4().hex[:8]}"
    yield name
    with Connection(RABBIT_URL) as conn, contextlib.suppress(*conn.channel_errors):
        conn.channel().queue_delete(name)


def _ready(name: str) -> int | None:
    """Messages ready in queue ``name``; None while it does not exist."""
    with Connection(RABBIT_URL) as conn:
        try:
            return int(conn.channel().queue_declare(name, passive=True).message_count)
        except conn.channel_errors:
            return None


def test_every_transition_kept_in_the_durable_queue_while_no_sync_worker_runs(
        redis_url: str, database_url: str, queue_name: str) -> None:
    env = {"CELERY_RESULT_BACKEND": redis_url, "FLOWER_OPS_CAPTURE_QUEUE": queue_name}
    client = Celery("rabbit-capture", broker=RABBIT_URL, backend=redis_url,
                    set_as_current=False)
    client.conf.update(task_send_sent_event=True)
    worker = CeleryWorker(RABBIT_URL, concurrency=2, env=env).start()
    sync: SyncWorkerProcess | None = None
    try:
        worker.wait_ready(client)
        wait_for(lambda: _ready(queue_name) is not None, timeout_seconds=20,
                 message="the queue declared by the worker")
        results = [client.send_task("automation.add", args=(i, i)) for i in range(300)]
        for result in results:
            result.get(timeout=60)
        ids = [r.id for r in results]
        sync = SyncWorkerProcess(redis_url=RABBIT_URL, database_url=database_url, env={
            **FAST_SYNC_WORKER, "CELERY_RESULT_BACKEND": redis_url,
            "FLOWER_OPS_SYNC_QUEUE": queue_name,
            "FLOWER_OPS_SYNC_RECONCILE_INTERVAL_SECONDS": "86400",
            "FLOWER_OPS_SYNC_DISCOVERY_INTERVAL_SECONDS": "0"}).start()
        wait_history_complete(database_url, ids, timeout_seconds=60)
        # acknowledged after the commit: once the consumer is gone, nothing
        # comes back to the queue
        assert sync.stop() == 0
        assert _ready(queue_name) == 0
    finally:
        if sync is not None:
            sync.stop()
        worker.stop()
