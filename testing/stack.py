"""The stack most end-to-end tests and suites run against: a Celery worker
and a monitor on one Redis db, and, given a database, the sync worker writing
to it — started together, waited for, stopped together — with a client of
the monitor's API holding a bearer token.

``running_stack`` is the usual way in: it flushes the Redis db before and
after. The fault-injection suite (``hardening/fault_stack.py``) builds its
own ``FaultStack`` from ``testing.processes``: proxies, several workers and
processes replaced mid-run are its own business.
"""
from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
import requests
from celery import Celery

from testing.apps import automation_app
from testing.executions import audit_entries, execution_row, wait_status
from testing.processes import CeleryWorker, Monitor, Process, SyncWorkerProcess
from testing.settings import FAST_MONITOR_REFRESH
from testing.waiting import wait_for

READ_TIMEOUT_SECONDS = 10.0
ACTION_TIMEOUT_SECONDS = 30.0


class Stack:
    """Worker, monitor and (with ``database_url``) sync worker on ``broker_url``.

    ``monitor_env`` is the monitor's whole extra environment (``DATABASE_URL``
    is added when there is a database); ``sync_env`` the sync worker's
    (e.g. ``testing.settings.FAST_SYNC_WORKER``). The automation app in this
    process is pointed at ``broker_url`` (``app``), so its tasks'
    ``.delay()`` reach the worker.
    """

    def __init__(self, *, broker_url: str, database_url: str | None = None,
                 monitor_env: Mapping[str, str] = FAST_MONITOR_REFRESH,
                 monitor_args: Sequence[str] = (),
                 sync_env: Mapping[str, str] | None = None,
                 concurrency: int = 2) -> None:
        self.broker_url = broker_url
        self.database_url = database_url
        self.app: Celery = automation_app(broker_url)
        # the stack's monitors (and a second one on its environment) are one group
        self.monitor_env: dict[str, str] = {
            "FLOWER_OPS_MONITOR_GROUP": f"stack-{secrets.token_hex(4)}",
            **({"DATABASE_URL": database_url} if database_url else {}), **monitor_env}
        self.monitor_args = list(monitor_args)
        self.sync: SyncWorkerProcess | None = None
        if database_url is not None:
            self.sync = SyncWorkerProcess(redis_url=broker_url, database_url=database_url,
                                          env=sync_env)
        self.worker = CeleryWorker(broker_url, concurrency=concurrency)
        self.monitor = self._new_monitor()
        self._token: str | None = None

    # -- lifecycle ------------------------------------------------------------------

    def _new_monitor(self) -> Monitor:
        return Monitor(self.broker_url, env=self.monitor_env, extra_args=self.monitor_args)

    def processes(self) -> list[Process]:
        """Every process of the stack, the monitor first."""
        return [p for p in (self.monitor, self.worker, self.sync) if p is not None]

    def start(self) -> Stack:
        """Start every process, then wait until the sync worker listens, the
        worker answers a ping and the monitor's health check answers."""
        if self.sync is not None:
            self.sync.start()
        self.worker.start()
        self.monitor.start()
        if self.sync is not None:
            self.sync.wait_listening()
        self.worker.wait_ready(self.app)
        self.monitor.wait_ready()
        return self

    def stop(self) -> None:
        """Stop the monitor, the worker and the sync worker, each even if another fails."""
        with contextlib.ExitStack() as stops:
            for process in reversed(self.processes()):
                stops.callback(process.stop)

    def restart_monitor(self) -> Monitor:
        """A fresh monitor process (Flower's memory empty, on a new port), ready."""
        self.monitor.stop()
        self.monitor = self._new_monitor().start().wait_ready()
        self._token = None
        return self.monitor

    # -- the monitor's API ------------------------------------------------------------

    @property
    def api(self) -> str:
        return self.monitor.api

    @property
    def token(self) -> str:
        """A read+write token from the current monitor, fetched once."""
        if self._token is None:
            self._token = self.monitor.token()
        return self._token

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(f"{self.api}{path}", params=params, timeout=READ_TIMEOUT_SECONDS,
                            headers=self.headers())

    def get_json(self, path: str, **params: Any) -> Any:
        """The body of a GET that must answer 200."""
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any = None, token: str | None = None) -> requests.Response:
        return requests.post(f"{self.api}{path}", json=body, timeout=ACTION_TIMEOUT_SECONDS,
                             headers=self.headers(token))

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.get_json(f"/tasks/{task_id}"))

    def wait_state(self, task_id: str, state: str, timeout_seconds: float = 40.0
                   ) -> dict[str, Any]:
        """Until ``GET /tasks/{task_id}`` says ``state``; that task."""
        def reached() -> dict[str, Any] | None:
            response = self.get(f"/tasks/{task_id}")
            if response.status_code == 200 and response.json()["state"] == state:
                return dict(response.json())
            return None

        return wait_for(reached, timeout_seconds=timeout_seconds, interval_seconds=0.2,
                        message=f"task {task_id} in {state}")

    # -- the database ------------------------------------------------------------------

    def require_database_url(self) -> str:
        """``database_url``; ``RuntimeError`` for a stack without a database."""
        if self.database_url is None:
            raise RuntimeError("this stack has no database")
        return self.database_url

    def require_sync(self) -> SyncWorkerProcess:
        """The sync worker; ``RuntimeError`` for a stack without a database."""
        if self.sync is None:
            raise RuntimeError("this stack has no sync worker")
        return self.sync

    def row(self, task_id: str) -> dict[str, Any] | None:
        """The ``automation.job_executions`` row of ``task_id``, or None."""
        return execution_row(self.require_database_url(), task_id)

    def audit(self, task_id: str) -> list[tuple[str, str, str]]:
        """``(subject, action, outcome)`` of the audit entries about ``task_id``."""
        return audit_entries(self.require_database_url(), task_id)

    def wait_status(self, task_id: str, status: str, timeout_seconds: float = 30.0
                    ) -> dict[str, Any]:
        """Until the row of ``task_id`` is in ``status``; that row."""
        return wait_status(self.require_database_url(), task_id, status,
                           timeout_seconds=timeout_seconds)


@contextlib.contextmanager
def running_stack(*, broker_url: str, database_url: str | None = None,
                  monitor_env: Mapping[str, str] = FAST_MONITOR_REFRESH,
                  monitor_args: Sequence[str] = (),
                  sync_env: Mapping[str, str] | None = None,
                  concurrency: int = 2) -> Iterator[Stack]:
    """A started ``Stack`` (arguments as there) on ``broker_url``, a Redis db
    that is flushed before it starts and after it stops."""
    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
        stack = Stack(broker_url=broker_url, database_url=database_url,
                      monitor_env=monitor_env, monitor_args=monitor_args, sync_env=sync_env,
                      concurrency=concurrency)
        try:
            yield stack.start()
        finally:
            stack.stop()
            client.flushdb()
    finally:
        client.close()
