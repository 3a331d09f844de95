"""Alerts end to end: a real monitor (``celery flower-ops``), real workers on a
real Redis, small thresholds through the environment, and a webhook receiver
on loopback."""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery

from flower_ops import instrument
from flower_ops.core.times import ISO_PATTERN
from testing.processes import CeleryWorker, Monitor
from testing.services import RedisService
from testing.waiting import wait_for
from testing.webhook import WebhookReceiver

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def broker_url(redis_service: RedisService, redis_db: int) -> Iterator[str]:
    client = redis_service.client(redis_db)
    client.flushdb()
    yield redis_service.url(redis_db)
    client.flushdb()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(fail_first=1).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def monitor(broker_url: str, webhook: WebhookReceiver) -> Iterator[Monitor]:
    env = {
        "FLOWER_OPS_STUCK_TASK_SECONDS": "2",
        "FLOWER_OPS_BACKLOG_MESSAGES": "100",
        "FLOWER_OPS_BACKLOG_SECONDS": "1",
        "FLOWER_OPS_SATURATED_SECONDS": "2",
        "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
        "FLOWER_OPS_INSPECT_INTERVAL_SECONDS": "1",
        "FLOWER_OPS_QUEUES": "health-backlog",
        "FLOWER_OPS_ALERT_WEBHOOK_URL": webhook.url,
    }
    monitor = Monitor(broker_url, env=env)
    monitor.start().wait_ready()
    yield monitor
    monitor.stop()


@pytest.fixture(scope="module")
def client_app(broker_url: str) -> Iterator[Celery]:
    app = Celery("health-tests", broker=broker_url, backend=broker_url, set_as_current=False)
    instrument(app)
    yield app
    app.close()


class Api:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.headers = {"Authorization": f"Bearer {monitor.token()}"}

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.monitor.api}{path}", headers=self.headers, timeout=5)
        response.raise_for_status()
        return response.json()

    def active(self, kind: str, subject: str) -> dict[str, Any] | None:
        for alert in self.get("/alerts")["alerts"]:
            if alert["kind"] == kind and alert["subject"] == subject:
                return alert  # type: ignore[no-any-return]
        return None

    def resolved(self, alert_id: str) -> dict[str, Any] | None:
        for alert in self.get("/alerts")["resolved"]:
            if alert["id"] == alert_id:
                return alert  # type: ignore[no-any-return]
        return None

    def metrics(self) -> str:
        response = requests.get(f"{self.monitor.base_url}/metrics", auth=self.monitor.basic_auth,
                                timeout=5)
        response.raise_for_status()
        return response.text


@pytest.fixture(scope="module")
def api(monitor: Monitor) -> Api:
    return Api(monitor)


def test_task_running_past_threshold_raises_stuck_alert_that_resolves_when_it_ends(
        api: Api, client_app: Celery, broker_url: str, webhook: WebhookReceiver) -> None:
    worker = CeleryWorker(broker_url, queues=["health-stuck"], concurrency=1)
    worker.start().wait_ready(client_app)
    try:
        task = client_app.send_task("automation.sleep", args=(7,), queue="health-stuck")
        stuck = wait_for(lambda: api.active("stuck_task", task.id), timeout_seconds=30,
                         message="stuck alert")
        assert stuck["severity"] == "warning"
        assert "automation.sleep" in stuck["message"] and worker.hostname in stuck["message"]
        assert stuck["details"]["reason"] == "threshold"
        stats = api.get("/stats")
        assert any(a["id"] == stuck["id"] for a in stats["alerts"])
        assert stats["alerts_total"] >= 1 and stats["alerts_by_kind"]["stuck_task"] >= 1
        only_stuck = api.get("/alerts?kind=stuck_task&limit=1")
        assert [a["kind"] for a in only_stuck["alerts"]] == ["stuck_task"]
        bad = requests.get(f"{api.monitor.api}/alerts?limit=0", headers=api.headers, timeout=5)
        assert bad.status_code == 400
        assert 'flower_ops_alerts_active{kind="stuck_task",severity="warning"} 1.0' \
            in api.metrics()
        # One pool slot, busy: the worker is saturated too
        saturated = wait_for(lambda: api.active("worker_saturated", worker.hostname),
                             timeout_seconds=20, message="saturated alert")
        assert saturated["details"]["max_concurrency"] == 1

        resolved = wait_for(lambda: api.resolved(stuck["id"]), timeout_seconds=30,
                            message="stuck alert resolved")
        for key in ("since", "raised_at", "resolved_at"):
            assert re.fullmatch(ISO_PATTERN, resolved[key]), key
        assert re.fullmatch(ISO_PATTERN, resolved["details"]["started"])
        assert round(resolved["details"]["running_seconds"], 3) \
            == resolved["details"]["running_seconds"]
        assert resolved["resolved_at"] >= resolved["raised_at"]
        assert api.active("stuck_task", task.id) is None
        wait_for(lambda: api.resolved(saturated["id"]), timeout_seconds=20,
                 message="saturated alert resolved")
        # The webhook got both, in order, despite its first answer being a 500
        wait_for(lambda: webhook.events_for(stuck["id"]) == ["raised", "resolved"],
                 timeout_seconds=30, message="webhook raise and resolve")
        assert webhook.attempts > len(webhook.received) - 1
        delivered = [e for e in list(webhook.received) if e["alert"]["id"] == stuck["id"]]
        for entry in delivered:
            assert re.fullmatch(ISO_PATTERN, entry["sent_at"])
            assert re.fullmatch(ISO_PATTERN, entry["alert"]["raised_at"])
        assert re.fullmatch(ISO_PATTERN, delivered[-1]["alert"]["resolved_at"])
    finally:
        worker.stop()


def test_queue_without_consumer_and_hundred_messages_raises_backlog_alert(
        api: Api, client_app: Celery) -> None:
    with client_app.producer_or_acquire() as producer:
        for i in range(100):
            client_app.send_task("automation.add", args=(i, i), queue="health-backlog",
                                 producer=producer)
    alert = wait_for(lambda: api.active("queue_backlog", "health-backlog"),
                     timeout_seconds=30, message="backlog alert")
    assert alert["severity"] == "critical"
    assert alert["details"]["messages"] == 100
    assert alert["details"]["reason"] == "no_consumer"
    assert "no consumer" in alert["message"]
    metrics = api.metrics()
    assert 'flower_ops_queue_messages{queue="health-backlog"} 100.0' in metrics
    assert 'flower_ops_queue_oldest_message_age_seconds{queue="health-backlog"}' in metrics
    queue = next(q for q in api.get("/queues")["queues"] if q["name"] == "health-backlog")
    assert queue["messages"] == 100 and queue["consumers"] == 0

    with client_app.connection_for_write() as conn:
        conn.default_channel.queue_purge("health-backlog")
    wait_for(lambda: api.resolved(alert["id"]), timeout_seconds=30,
             message="backlog alert resolved")


def test_killed_worker_with_running_task_raises_worker_offline_and_orphaned_alerts(
        api: Api, client_app: Celery, broker_url: str) -> None:
    worker = CeleryWorker(broker_url, queues=["health-kill"], concurrency=1)
    worker.start().wait_ready(client_app)
    try:
        task = client_app.send_task("automation.sleep", args=(120,), queue="health-kill")
        wait_for(lambda: api.get(f"/tasks/{task.id}")["state"] == "STARTED"
                 if _known(api, task.id) else False,
                 timeout_seconds=30, message="task started")
        worker.kill()
        offline = wait_for(lambda: api.active("worker_offline", worker.hostname),
                           timeout_seconds=30, message="worker offline alert")
        orphaned = wait_for(lambda: api.active("orphaned_task", task.id),
                            timeout_seconds=30, message="orphaned task alert")
    finally:
        worker.kill()
    assert offline["severity"] == "critical" and orphaned["severity"] == "critical"
    assert orphaned["details"]["worker"] == worker.hostname
    assert "went offline" in orphaned["message"]
    # An orphan is not also reported as stuck
    assert api.active("stuck_task", task.id) is None
    workers = {w["hostname"]: w for w in api.get("/workers")["workers"]}
    assert workers[worker.hostname]["status"] == "offline"
    assert re.fullmatch(ISO_PATTERN, workers[worker.hostname]["offline_since"])
    assert re.fullmatch(ISO_PATTERN, offline["details"]["last_heartbeat"])


def _known(api: Api, task_id: str) -> bool:
    response = requests.get(f"{api.monitor.api}/tasks/{task_id}", headers=api.headers, timeout=5)
    return response.status_code == 200
