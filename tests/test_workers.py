"""``/workers`` with real workers: current RSS of the worker and its pool
processes where ``instrument(app)`` runs, Celery's max RSS (labelled) where it
does not; active and reserved counts, pool, heartbeat age; worker memory in
``/metrics``."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery

from flower_ops import instrument
from testing.processes import CeleryWorker, Monitor
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

@pytest.fixture
def client_app(redis_url: str) -> Iterator[Celery]:
    app = Celery("workers-client", broker=redis_url, backend=redis_url, set_as_current=False)
    instrument(app)
    yield app
    app.close()


def test_workers_report_memory_counts_pool_and_heartbeat(redis_url: str,
                                                         client_app: Celery) -> None:
    monitor = Monitor(redis_url, env={"FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "1"})
    instrumented = CeleryWorker(redis_url, queues=["w-inst"], concurrency=2)
    plain = CeleryWorker(redis_url, app="testing.apps.plain", queues=["w-plain"],
                         concurrency=1)
    for process in (monitor, instrumented, plain):
        process.start()
    try:
        monitor.wait_ready()
        instrumented.wait_ready(client_app)
        plain.wait_ready(client_app)
        headers = {"Authorization": f"Bearer {monitor.token()}"}

        def workers() -> dict[str, Any]:
            body = requests.get(f"{monitor.api}/workers", headers=headers, timeout=5).json()
            return {w["hostname"]: w for w in body["workers"]}

        # /healthcheck answers before Flower's event receiver has bound its
        # queue, and a task-started event published before that is lost (the
        # worker's active count would stay 0): send the task once both
        # workers' heartbeats have reached the monitor
        def heard() -> bool:
            table = workers()
            return all((table.get(w.hostname) or {}).get("heartbeat_age_seconds") is not None
                       for w in (instrumented, plain))

        wait_for(heard, timeout_seconds=30, message="both workers' heartbeats")
        running = client_app.send_task("automation.sleep", args=(20,), queue="w-inst")
        last: list[dict[str, Any]] = [{}]

        def ready() -> dict[str, Any] | None:
            table = last[0] = workers()
            inst, other = table.get(instrumented.hostname), table.get(plain.hostname)
            if not inst or not other or inst["memory"]["kind"] != "rss" or inst["active"] != 1:
                return None
            if other["memory"]["rss_bytes"] is None:
                return None
            if inst["pool"]["implementation"] is None:  # its inspect stats not in yet
                return None
            # an inspect reply taken while the task was still only reserved says
            # so until the next one (events already say it is active)
            if inst["reserved"] != 0:
                return None
            return table

        try:
            table = wait_for(ready, timeout_seconds=40, message="probe replies and inspect stats")
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; last /workers: {last[0]}") from None
        inst = table[instrumented.hostname]
        assert inst["status"] == "online"
        assert 0 <= inst["heartbeat_age_seconds"] < 10
        assert inst["pool"]["implementation"] == "prefork"   # as Celery's -P names it
        assert inst["pool"]["class"] == "celery.concurrency.prefork:TaskPool"
        assert inst["max_concurrency"] == 2
        assert inst["reserved"] == 0
        processes = inst["memory"]["processes"]
        assert [p["role"] for p in processes].count("pool") == 2
        assert (processes[0]["pid"], processes[0]["role"]) == (instrumented.pid, "main")
        assert all(p["rss_bytes"] > 1_000_000 for p in processes)
        assert inst["memory"]["rss_bytes"] == sum(p["rss_bytes"] for p in processes)

        other = table[plain.hostname]
        assert other["memory"]["kind"] == "max_rss"
        assert other["memory"]["rss_bytes"] > 1_000_000
        assert other["reserved"] is None  # unknown without instrument()

        metrics = requests.get(f"{monitor.base_url}/metrics", auth=monitor.basic_auth,
                               timeout=5).text
        assert (f'flower_ops_worker_memory_bytes{{kind="rss",worker="{instrumented.hostname}"}}'
                in metrics)
        assert (f'flower_ops_worker_memory_bytes{{kind="max_rss",worker="{plain.hostname}"}}'
                in metrics)
        client_app.control.revoke(running.id, terminate=True)
    finally:
        for process in (instrumented, plain, monitor):
            process.kill()
