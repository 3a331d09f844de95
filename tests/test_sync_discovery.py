"""The fast Redis event path and discovery of tasks that have no row, against
real Redis, PostgreSQL and Celery workers."""
from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import psycopg
import pytest
from celery import Celery
from celery.utils.time import adjust_timestamp

from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore
from sync_worker.backoff import Backoff
from sync_worker.receiver import EventConsumer, WorkerLiveness
from sync_worker.redis_events import decode_events
from sync_worker.runner import SyncWorker
from testing.apps.client import client_app
from testing.executions import wait_all
from testing.inprocess import start_in_process
from testing.processes import CeleryWorker
from testing.waiting import wait_for

ROW_COLUMNS = ("execution_id, task_name, status, status_at, worker_lost, args, kwargs, "
               "args_exact, result, error, traceback, worker, queue, routing_key, exchange, "
               "retries, parent_id, root_id, eta, expires, sent_at, received_at, started_at, "
               "succeeded_at, failed_at, retried_at, revoked_at, runtime, first_seen_at")


class Collector:
    """An ``EventConsumer`` on its own thread, collecting transitions."""

    def __init__(self, app: Celery, *, fast_redis: bool) -> None:
        self.transitions: list[Transition] = []
        self.liveness = WorkerLiveness()
        self._lock = threading.Lock()
        self.consumer = EventConsumer(app=app, sink=self._put, liveness=self.liveness,
                                      on_connected=lambda: None, backoff=Backoff(),
                                      fast_redis=fast_redis)
        self.thread = threading.Thread(target=self.consumer.run, daemon=True)

    def _put(self, transition: Transition) -> None:
        with self._lock:
            self.transitions.append(transition)

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.consumer.connected.wait(20), "consumer did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.stop()
        self.thread.join(10)


def rows(database_url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return {r[0]: r for r in conn.execute(
            f"SELECT {ROW_COLUMNS} FROM automation.job_executions")}


@pytest.fixture
def second_database_url(pg_service) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = pg_service.create_database()
    yield pg_service.url(name)
    pg_service.drop_database(name)


def test_same_events_through_both_receivers_produce_identical_rows(
        redis_url: str, database_url: str, second_database_url: str) -> None:
    app = client_app(redis_url)
    worker = CeleryWorker(redis_url, concurrency=2).start()
    try:
        worker.wait_ready(app)
        with Collector(app, fast_redis=True) as fast, Collector(app, fast_redis=False) as slow:
            assert (fast.consumer.path, slow.consumer.path) == ("redis-pubsub", "kombu")
            # "connected" can come a moment before kombu's fanout binding
            # delivers: wait until both hear a probe's events, so the
            # comparison starts with both really listening.
            probe = app.send_task("automation.add", args=(0, 0))
            probe.get(timeout=30)
            wait_for(lambda: all(any(t.task_id == probe.id and t.state == "SUCCESS"
                                     for t in list(c.transitions)) for c in (fast, slow)),
                     timeout_seconds=20, message="both receivers heard the probe")
            results = [app.send_task("automation.add", args=(i, i)) for i in range(20)]
            results.append(app.send_task("automation.echo", args=("x", [1, 2]),
                                         kwargs={"k": {"nested": None}}))
            results.append(app.send_task("automation.flaky", kwargs={"succeed_on": 2}))
            failing = app.send_task("automation.fail", args=("broken",))
            for r in results:
                r.get(timeout=30)
            with pytest.raises(ValueError):
                failing.get(timeout=30)
            ids = {r.id for r in results} | {failing.id}

            def both_saw_everything() -> bool:
                return all(len({t.task_id for t in c.transitions
                                if t.state in ("SUCCESS", "FAILURE")} & ids) == len(ids)
                           for c in (fast, slow))
            wait_for(both_saw_everything, timeout_seconds=20, message="both receivers done")
            # Both hear the worker's heartbeats (every 2 s). One may have caught
            # a heartbeat sent while only the other was subscribed, so wait for
            # the next one rather than compare a single instant.
            wait_for(lambda: fast.liveness.known().keys() == slow.liveness.known().keys()
                     == {worker.hostname}, timeout_seconds=15,
                     message="both receivers heard the worker's heartbeats")
        for collector, url in ((fast, database_url), (slow, second_database_url)):
            store = PgExecutionStore(database_url=url)
            try:
                batch = [t for t in collector.transitions if t.task_id in ids]
                store.apply(fold(batch).values(), batch)
            finally:
                store.close()
        fast_rows, slow_rows = rows(database_url), rows(second_database_url)
        assert len(fast_rows) == len(ids)
        assert fast_rows == slow_rows
        echo = fast_rows[results[20].id]
        assert echo[5:8] == (["x", [1, 2]], {"k": {"nested": None}}, False)   # reprs
    finally:
        worker.stop()


def test_fast_receiver_honours_global_keyprefix(redis_url: str) -> None:
    prefixed = client_app(redis_url)
    prefixed.conf.broker_transport_options = {"global_keyprefix": "tenant-a:"}
    other = client_app(redis_url)
    with Collector(prefixed, fast_redis=True) as collector:
        assert collector.consumer.path == "redis-pubsub"
        for app, task_id in ((other, "unprefixed-task"), (prefixed, "prefixed-task")):
            with app.connection_for_write() as conn:
                dispatcher = app.events.Dispatcher(conn, hostname="pub@host", enabled=True)
                dispatcher.send("task-started", uuid=task_id)
        wait_for(lambda: any(t.task_id == "prefixed-task" for t in collector.transitions),
                 timeout_seconds=10, message="prefixed event received")
        time.sleep(0.3)
    assert {t.task_id for t in collector.transitions} == {"prefixed-task"}


def _envelope(body: bytes | str, **extra: Any) -> bytes:
    return json.dumps({"body": body, "content-encoding": "utf-8",
                       "content-type": "application/json", "headers": {},
                       "properties": {"delivery_info": {"exchange": "celeryev"}}, **extra}
                      ).encode()


def test_decoder_handles_plain_bodies_tagged_json_lists_and_timezone_offsets() -> None:
    plain = {"type": "task-started", "uuid": "a", "timestamp": 7200.0, "utcoffset": -2}
    [event] = decode_events(_envelope(json.dumps(plain)))
    assert event["uuid"] == "a"
    # the sender's own stamp: not shifted by the offsets' gap as EventReceiver does
    assert event["timestamp"] == 7200.0 != adjust_timestamp(7200.0, -2)
    tagged = {"type": "task-sent", "uuid": "b", "eta": {"__type__": "datetime",
                                                        "__value__": "2024-01-01T00:00:00"}}
    body = base64.b64encode(json.dumps([tagged, plain]).encode()).decode()
    payload = json.loads(_envelope(body))
    payload["properties"]["body_encoding"] = "base64"
    first, second = decode_events(json.dumps(payload).encode())
    assert first["eta"].year == 2024 and second["uuid"] == "a"


def test_tasks_finished_or_queued_while_no_sync_worker_ran_get_rows_on_start(
        redis_url: str, database_url: str) -> None:
    app = client_app(redis_url)
    # no capture stream: the worker's events are lost as an uninstrumented app's are
    worker = CeleryWorker(redis_url, concurrency=2, env={"FLOWER_OPS_CAPTURE": "off"}).start()
    try:
        worker.wait_ready(app)
        done = [app.send_task("automation.add", args=(i, 10)) for i in range(30)]
        echo = app.send_task("automation.echo", args=("v", 1.5), kwargs={"flag": True})
        bad = app.send_task("automation.fail", args=("nobody listened",))
        for r in done + [echo]:
            r.get(timeout=30)
        with pytest.raises(ValueError):
            bad.get(timeout=30)
    finally:
        worker.stop()
    queued = [app.send_task("automation.add", args=(i, 1)) for i in range(5)]
    time.sleep(1.0)   # older than the settle time: nothing will come for them
    sync: SyncWorker = start_in_process(redis_url, database_url,
                                        FLOWER_OPS_SYNC_DISCOVERY_BATCH_SIZE="10")
    try:
        wait_for(lambda: sync.discovery_passes >= 1, timeout_seconds=30,
                 message="first discovery pass")
        wait_all(database_url, [r.id for r in done + [echo]], "success", timeout_seconds=30)
        wait_all(database_url, [bad.id], "failure", timeout_seconds=30)
        wait_all(database_url, [r.id for r in queued], "pending", timeout_seconds=30)
        got = rows(database_url)
        assert len(got) == len(done) + 2 + len(queued)
        r = got[done[3].id]
        assert (r[1], r[2], r[5], r[7], r[8], r[11], r[12]) == (
            "automation.add", "success", [3, 10], True, 13, worker.hostname, "celery")
        assert r[23] is not None                                  # succeeded_at: date_done
        e = got[echo.id]
        assert (e[5], e[6], e[7], e[8]) == (["v", 1.5], {"flag": True}, True,
                                            {"args": ["v", 1.5], "kwargs": {"flag": True}})
        b = got[bad.id]
        assert b[2] == "failure" and b[9].startswith("ValueError(") and \
            "nobody listened" in b[10]
        q = got[queued[2].id]
        assert (q[1], q[2], q[5], q[6], q[7], q[12]) == ("automation.add", "pending", [2, 1],
                                                         {}, True, "celery")
        assert sync.metrics.discovered.labels("backend")._value.get() == len(done) + 2
        assert sync.metrics.discovered.labels("queue")._value.get() == len(queued)
        # a second pass finds nothing new; queued rows advance once a worker runs them
        passes = sync.discovery_passes
        sync._gap()
        wait_for(lambda: sync.discovery_passes > passes, timeout_seconds=20,
                 message="second discovery pass")
        assert sync.metrics.discovered.labels("backend")._value.get() == len(done) + 2
        worker = CeleryWorker(redis_url, concurrency=2).start()
        wait_all(database_url, [r.id for r in queued], "success", timeout_seconds=30)
    finally:
        sync.stop()
        worker.stop()


def _rabbitmq_up() -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5672)) == 0


@pytest.mark.skipif(not _rabbitmq_up(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_amqp_broker_falls_back_to_celerys_event_receiver(
        redis_url: str, database_url: str) -> None:
    amqp_url = "amqp://guest:guest@127.0.0.1:5672//"
    sync = start_in_process(amqp_url, database_url, CELERY_RESULT_BACKEND=redis_url)
    try:
        assert sync._consumer is not None and sync._consumer.path == "kombu"
        app = Celery("amqp-events", broker=amqp_url, set_as_current=False)
        task_id = f"amqp-{time.time_ns()}"
        with app.connection_for_write() as conn:
            dispatcher = app.events.Dispatcher(conn, hostname="pub@host", enabled=True)
            dispatcher.send("task-sent", uuid=task_id, name="automation.add", args="(1, 2)",
                            kwargs="{}", queue="celery", routing_key="celery")
            dispatcher.send("task-succeeded", uuid=task_id, result="3", runtime=0.01)
        wait_all(database_url, [task_id], "success", timeout_seconds=20)
        got = rows(database_url)[task_id]
        assert (got[1], got[5], got[8]) == ("automation.add", [1, 2], 3)
    finally:
        sync.stop()
