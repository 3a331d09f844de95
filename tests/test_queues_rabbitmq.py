"""Queue numbers from this machine's real RabbitMQ: the management API when
reachable (ready, unacked, consumers, head message age), AMQP passive declare
otherwise (ready, consumers), and the answer says which. Flower's
``--broker_api`` is honoured end to end."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import requests
from celery import Celery
from kombu import Connection, Queue

from flower_ops import instrument
from flower_ops.demo.embedded import free_port
from flower_ops.monitor.sources.rabbitmq import SOURCE_AMQP, SOURCE_MANAGEMENT, RabbitQueueSource
from testing.processes import CeleryWorker, Monitor
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(150)

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"
MANAGEMENT_URL = "http://127.0.0.1:15672/api/"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _management_up() -> bool:
    try:
        return requests.get(f"{MANAGEMENT_URL}overview", auth=("guest", "guest"),
                            timeout=2).status_code == 200
    except requests.RequestException:
        return False


if not _port_open(5672):
    # A user's machine may have no RabbitMQ (none comes from PyPI); CI's has
    # one and sets FLOWER_OPS_TEST_REQUIRE_RABBITMQ so a missing one fails.
    if os.environ.get("FLOWER_OPS_TEST_REQUIRE_RABBITMQ"):
        raise RuntimeError("FLOWER_OPS_TEST_REQUIRE_RABBITMQ is set but no RabbitMQ answers "
                           "on 127.0.0.1:5672")
    pytest.skip("no RabbitMQ on 127.0.0.1:5672", allow_module_level=True)

_NO_MANAGEMENT = ("RabbitMQ management API not enabled on 127.0.0.1:15672 "
                  "(rabbitmq-plugins enable rabbitmq_management)")
if os.environ.get("FLOWER_OPS_TEST_REQUIRE_RABBITMQ") and not _management_up():
    # CI enables it (.ci/run): there a missing one is a failure, not a skip
    raise RuntimeError(f"FLOWER_OPS_TEST_REQUIRE_RABBITMQ is set but the {_NO_MANAGEMENT}")
needs_management = pytest.mark.skipif(not _management_up(), reason=_NO_MANAGEMENT)


@pytest.fixture
def names() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    queues = {"prio": f"fo-prio-{suffix}", "slow": f"fo-slow-{suffix}",
              "missing": f"fo-missing-{suffix}"}
    yield queues
    with Connection(RABBIT_URL) as conn:
        for name in queues.values():
            channel = conn.channel()
            try:
                channel.queue_delete(name)
            except conn.channel_errors:
                pass


@pytest.fixture
def client_app(names: dict[str, str]) -> Iterator[Celery]:
    app = Celery("rabbit-client", broker=RABBIT_URL, set_as_current=False)
    app.conf.task_ignore_result = True
    app.conf.task_queues = [
        Queue(names["prio"], routing_key=names["prio"], queue_arguments={"x-max-priority": 10}),
        Queue(names["slow"], routing_key=names["slow"]),
    ]
    instrument(app)
    yield app
    app.close()


def _fill(app: Celery, names: dict[str, str]) -> None:
    with app.producer_or_acquire() as producer:
        for i in range(10):
            app.send_task("queues.slow", args=(0,), queue=names["prio"], priority=i,
                          producer=producer)


def _passive(name: str) -> tuple[int, int]:
    with Connection(RABBIT_URL) as conn:
        _, ready, consumers = conn.channel().queue_declare(name, passive=True)
        return ready, consumers


@needs_management
def test_management_api_reports_ready_unacked_consumers_and_age(
        client_app: Celery, names: dict[str, str]) -> None:
    _fill(client_app, names)
    worker = CeleryWorker(RABBIT_URL, app="testing.apps.late_acks", queues=[names["slow"]],
                          concurrency=1, env={"CELERY_RESULT_BACKEND": ""})
    worker.start().wait_ready(client_app)
    source = RabbitQueueSource(broker_url=RABBIT_URL)
    try:
        for _ in range(6):
            client_app.send_task("queues.slow", args=(30,), queue=names["slow"])
        wanted = [names["prio"], names["slow"], names["missing"]]

        def settled() -> bool:
            # the management API refreshes its statistics every few seconds
            queues = source.fetch(wanted).queues
            slow_q = queues[names["slow"]]
            return (queues[names["prio"]].messages == 10 and slow_q.unacked == 4
                    and slow_q.messages == 2 and slow_q.consumers == 1)

        wait_for(settled, timeout_seconds=40, interval_seconds=1.0,
                 message="management numbers: 10 ready (priority), 2 ready + 4 unacked")
        snapshot = source.fetch(wanted)
        assert snapshot.source == SOURCE_MANAGEMENT and snapshot.detail is None
        prio, slow_q = snapshot.queues[names["prio"]], snapshot.queues[names["slow"]]
        assert (prio.messages, prio.consumers) == _passive(names["prio"]) == (10, 0)
        assert (slow_q.messages, slow_q.consumers) == _passive(names["slow"]) == (2, 1)
        assert snapshot.unacked_total == 4
        # instrument() stamps the AMQP timestamp property: the head message's age
        assert prio.oldest_message_age_seconds is not None
        assert 0 <= prio.oldest_message_age_seconds < 120
        assert prio.rate_in is not None
        assert snapshot.queues[names["missing"]].messages == 0
    finally:
        worker.kill()
        source.close()


def test_without_management_api_passive_declare_reports_ready_and_consumers(
        client_app: Celery, names: dict[str, str]) -> None:
    _fill(client_app, names)
    worker = CeleryWorker(RABBIT_URL, app="testing.apps.late_acks", queues=[names["slow"]],
                          concurrency=1, env={"CELERY_RESULT_BACKEND": ""})
    worker.start().wait_ready(client_app)
    closed = f"http://127.0.0.1:{free_port()}/api/"
    source = RabbitQueueSource(broker_url=RABBIT_URL, broker_api=closed)
    try:
        for _ in range(6):
            client_app.send_task("queues.slow", args=(30,), queue=names["slow"])
        wanted = [names["prio"], names["slow"], names["missing"]]
        wait_for(lambda: source.fetch(wanted).queues[names["slow"]].messages == 2,
                 timeout_seconds=30, message="2 ready once the worker prefetched 4")
        snapshot = source.fetch(wanted)
        assert snapshot.source == SOURCE_AMQP
        assert "management API unavailable" in (snapshot.detail or "")
        assert snapshot.queues[names["prio"]].messages == 10
        assert snapshot.queues[names["slow"]].consumers == 1
        assert snapshot.queues[names["slow"]].unacked is None  # AMQP cannot tell
        assert snapshot.queues[names["missing"]].messages == 0  # a 404 is not an error
    finally:
        worker.kill()
        source.close()


def test_monitor_honours_flower_broker_api_option_and_says_which_source(
        redis_url: str, client_app: Celery, names: dict[str, str]) -> None:
    _fill(client_app, names)
    closed = f"http://guest:guest@127.0.0.1:{free_port()}/api/"
    monitor = Monitor(RABBIT_URL, env={"CELERY_RESULT_BACKEND": redis_url,
                                       "FLOWER_OPS_QUEUES": names["prio"],
                                       "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5"},
                      extra_args=[f"--broker_api={closed}"])
    monitor.start().wait_ready()
    try:
        headers = {"Authorization": f"Bearer {monitor.token()}"}

        def queues() -> dict | None:  # type: ignore[type-arg]
            response = requests.get(f"{monitor.api}/queues", headers=headers, timeout=5)
            return response.json() if response.status_code == 200 else None

        body = wait_for(queues, timeout_seconds=30, message="/queues answers")
        assert body["broker"]["source"] == SOURCE_AMQP
        assert "management API unavailable" in body["broker"]["detail"]
        assert "guest" not in body["broker"]["detail"]  # credentials never echoed
        prio = next(q for q in body["queues"] if q["name"] == names["prio"])
        assert prio["messages"] == 10 and prio["unacked"] is None
    finally:
        monitor.stop()


def test_cancel_of_a_queued_task_on_rabbitmq_is_revoked_everywhere_and_counted_in_its_queue(
        redis_url: str, client_app: Celery, names: dict[str, str]) -> None:
    """RabbitMQ cannot take one message out of a queue: the task is REVOKED in
    every view at once, and the queue says how many of its ready messages are
    already revoked, until a worker takes and discards them."""
    queue = names["slow"]
    monitor = Monitor(RABBIT_URL, env={"CELERY_RESULT_BACKEND": redis_url,
                                       "FLOWER_OPS_QUEUES": queue,
                                       "FLOWER_OPS_QUEUE_REFRESH_SECONDS": "0.5",
                                       "FLOWER_OPS_CANCEL_CONFIRM_SECONDS": "1"})
    monitor.start().wait_ready()
    worker = None
    try:
        headers = {"Authorization": f"Bearer {monitor.token()}"}

        def get(path: str, **params: str) -> dict:  # type: ignore[type-arg]
            response = requests.get(f"{monitor.api}{path}", headers=headers, params=params,
                                    timeout=10)
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        def in_queue() -> dict | None:  # type: ignore[type-arg]
            return next((q for q in get("/queues")["queues"] if q["name"] == queue), None)

        def known(task_id: str) -> bool:
            return requests.get(f"{monitor.api}/tasks/{task_id}", headers=headers,
                                timeout=5).status_code == 200

        # /healthcheck answers before Flower's event receiver has bound its
        # queue, and a task-sent event published before that is gone: probe
        # (into a queue nobody reads) until one is seen, then send the task
        def receiving() -> bool:
            probe = client_app.send_task("automation.add", args=(0, 0),
                                         queue=names["missing"]).id
            try:
                return wait_for(lambda: known(probe), timeout_seconds=2,
                                message="the probe task")
            except AssertionError:
                return False

        wait_for(receiving, timeout_seconds=60, message="the monitor receiving events")
        task_id = client_app.send_task("automation.add", args=(1, 2), queue=queue).id
        wait_for(lambda: known(task_id), timeout_seconds=30,
                 message="the monitor knows the queued task")
        wait_for(lambda: (in_queue() or {}).get("messages") == 1, timeout_seconds=30,
                 message="the message is ready in its queue")

        response = requests.post(f"{monitor.api}/tasks/{task_id}/cancel", headers=headers,
                                 timeout=30)
        assert response.status_code == 200, response.text
        assert (response.json()["outcome"], response.json()["state"]) == ("cancelled", "REVOKED")
        listing = {t["id"]: t["state"] for t in get("/tasks", queue=queue)["tasks"]}
        assert listing[task_id] == "REVOKED"
        assert task_id in {t["id"] for t in get("/tasks", state="REVOKED")["tasks"]}
        wait_for(lambda: (in_queue() or {}).get("revoked") == 1, timeout_seconds=30,
                 message="the queue counts its revoked ready message")
        assert in_queue()["messages"] == 1   # type: ignore[index]  # still there: RabbitMQ

        worker = CeleryWorker(RABBIT_URL, queues=[queue], concurrency=1,
                              env={"CELERY_RESULT_BACKEND": redis_url}).start()
        worker.wait_ready(client_app)
        wait_for(lambda: (in_queue() or {}).get("messages") == 0 and
                 (in_queue() or {}).get("revoked") == 0, timeout_seconds=60,
                 message="a worker took and discarded it")
        assert requests.get(f"{monitor.api}/tasks/{task_id}", headers=headers,
                            timeout=5).json()["state"] == "REVOKED"   # unchanged
    finally:
        if worker is not None:
            worker.stop()
        monitor.stop()
