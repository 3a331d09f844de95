"""Real processes as a user starts them: Celery workers, the monitor
(``celery -A APP flower-ops``) and the sync worker (``python -m sync_worker``).

Each runs in its own session (process group), so ``kill()`` takes its
children (a prefork pool) with it, and logs to a temporary file that
``output()`` reads. Configuration is passed to the constructor; nothing here
reads the environment except to hand it on to the child.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from celery import Celery

from flower_ops.demo.embedded import free_port
from testing.paths import REPO_ROOT
from testing.waiting import wait_for

AUTOMATION_APP = "testing.apps.automation"
"""The ``-A`` argument of workers and monitors unless told otherwise."""

DEFAULT_BASIC_AUTH = "admin:admin123"

if TYPE_CHECKING:
    from typing import Self


STARTED: list[Process] = []
"""Every process started in this session, for ``kill_leftovers``."""


def kill_leftovers(since: int) -> list[str]:
    """Kill the processes started after ``STARTED[since]`` that still run (a
    test that failed before its ``finally``, or had none): a sync worker left
    running would go on consuming a Redis db's stream the next tests reuse.
    Returns their descriptions."""
    killed = []
    for process in STARTED[since:]:
        if process.alive():
            killed.append(f"{process.args[-1]} (pid {process.pid}, log {process.log})")
            process.kill()
    del STARTED[since:]
    return killed


class Process:
    """One child process: started on demand, stopped with SIGTERM (SIGKILL
    after ``timeout_seconds``), its output kept in ``log``."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], name: str) -> None:
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
        self.log = Path(tempfile.mkstemp(prefix=f"flower-ops-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start (or start again, appending to the same log)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO_ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the process was never started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_seconds: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL to the group; the exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (the process and its pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _exited_error(self, what: str) -> AssertionError:
        return AssertionError(f"{what} exited:\n{self.output()[-3000:]}")


class CeleryWorker(Process):
    """``celery -A APP worker -E`` on ``broker_url`` (handed on as ``REDIS_URL``)."""

    def __init__(self, broker_url: str, *, app: str = AUTOMATION_APP,
                 queues: Sequence[str] = ("celery",), concurrency: int = 2,
                 pool: str = "prefork", hostname: str | None = None,
                 env: Mapping[str, str] | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.hostname = hostname or f"worker-{uuid.uuid4().hex[:8]}@testhost"
        args = [sys.executable, "-m", "celery", "-A", app, "worker", "-E",
                "-Q", ",".join(queues), "-c", str(concurrency), "-P", pool,
                "-n", self.hostname, "--without-gossip", "--without-mingle",
                "--loglevel=INFO", *extra_args]
        super().__init__(args, {"REDIS_URL": broker_url, **(env or {})}, "worker")

    def wait_ready(self, celery_app: Celery, timeout_seconds: float = 30.0) -> CeleryWorker:
        """Until the worker answers a ping sent through ``celery_app``."""
        def pinged() -> bool:
            if not self.alive():
                raise self._exited_error("worker")
            replies = celery_app.control.ping(destination=[self.hostname], timeout=0.5)
            return any(self.hostname in reply for reply in replies)

        wait_for(pinged, timeout_seconds=timeout_seconds, message=f"worker {self.hostname}")
        return self


class Monitor(Process):
    """``celery -A APP flower-ops`` exactly as a user starts it."""

    def __init__(self, broker_url: str, *, app: str = AUTOMATION_APP,
                 basic_auth: str | None = DEFAULT_BASIC_AUTH, url_prefix: str | None = None,
                 env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                 port: int | None = None) -> None:
        # a fixed port lets a supervisor-style restart come back where clients look
        self.port = port or free_port()
        self.url_prefix = url_prefix
        args = [sys.executable, "-m", "celery", "-A", app, "flower-ops",
                f"--port={self.port}", "--address=127.0.0.1"]
        if basic_auth:
            args.append(f"--basic-auth={basic_auth}")
        if url_prefix:
            args.append(f"--url_prefix={url_prefix}")
        args.extend(extra_args)
        self.basic_auth: tuple[str, str] | None = None
        if basic_auth:
            user, _, password = basic_auth.partition(":")
            self.basic_auth = (user, password)
        # each monitor is its own group unless the test says otherwise: monitors
        # of different tests on one broker or database do not count as peers
        group = {"FLOWER_OPS_MONITOR_GROUP": f"test-{secrets.token_hex(4)}"}
        super().__init__(args, {"REDIS_URL": broker_url, **group, **(env or {})}, "monitor")

    @property
    def base_url(self) -> str:
        prefix = f"/{self.url_prefix.strip('/')}" if self.url_prefix else ""
        return f"http://127.0.0.1:{self.port}{prefix}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/automation/monitoring"

    @property
    def ws_url(self) -> str:
        """The live feed's WebSocket URL."""
        return self.api.replace("http://", "ws://", 1) + "/ws"

    def wait_ready(self, timeout_seconds: float = 30.0) -> Monitor:
        """Until ``/healthcheck`` answers 200."""
        def up() -> bool:
            if not self.alive():
                raise self._exited_error("monitor")
            try:
                return requests.get(f"{self.base_url}/healthcheck", timeout=1,
                                    auth=self.basic_auth).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout_seconds=timeout_seconds, message="monitor /healthcheck")
        return self

    def token(self, scopes: str | None = None) -> str:
        """A bearer token from ``POST /token`` with Flower's credentials."""
        body = {"scopes": scopes} if scopes else {}
        response = requests.post(f"{self.api}/token", json=body, auth=self.basic_auth, timeout=5)
        response.raise_for_status()
        return str(response.json()["access_token"])


class SyncWorkerProcess(Process):
    """``python -m sync_worker`` on ``redis_url`` and ``database_url``; ``env``
    adds its settings (e.g. ``testing.settings.FAST_SYNC_WORKER``)."""

    LISTENING = "listening to Celery events"

    def __init__(self, *, redis_url: str, database_url: str,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "sync_worker"],
                         {"REDIS_URL": redis_url, "DATABASE_URL": database_url, **(env or {})},
                         "sync")

    def times_listening(self) -> int:
        """How often it has (re)subscribed to the events so far."""
        return self.output().count(self.LISTENING)

    def wait_listening(self, timeout_seconds: float = 20.0, *, more_than: int = 0
                       ) -> SyncWorkerProcess:
        """Until it has subscribed more than ``more_than`` times (a standby
        replica subscribes only once it leads)."""
        def listening() -> bool:
            if not self.alive():
                raise self._exited_error("sync worker")
            return self.times_listening() > more_than

        wait_for(listening, timeout_seconds=timeout_seconds, message="sync worker listening")
        return self
