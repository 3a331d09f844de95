"""Real Celery worker and monitor processes for the tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import requests

from flower_ops.demo.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, *, timeout_seconds: float = 20.0, interval_seconds: float = 0.1,
             message: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_seconds
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_seconds)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {message} "
                         f"(last value: {last!r})")


class _Process:
    def __init__(self, args: Sequence[str], env: Mapping[str, str], name: str) -> None:
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.log = Path(tempfile.mkstemp(prefix=f"flower-ops-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "_Process":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_seconds: float = 20.0) -> int | None:
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
        """SIGKILL the whole process group (the worker and its pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class CeleryWorker(_Process):
    def __init__(self, broker_url: str, *, app: str = "tests.apps.automation",
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

    def wait_ready(self, celery_app, timeout_seconds: float = 30.0) -> "CeleryWorker":  # type: ignore[no-untyped-def]
        def pinged() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited:\n{self.output()[-3000:]}")
            replies = celery_app.control.ping(destination=[self.hostname], timeout=0.5)
            return any(self.hostname in reply for reply in replies)

        wait_for(pinged, timeout_seconds=timeout_seconds, message=f"worker {self.hostname}")
        return self


class Monitor(_Process):
    """``celery -A APP flower-ops`` exactly as a user starts it."""

    def __init__(self, broker_url: str, *, app: str = "tests.apps.automation",
                 basic_auth: str | None = "admin:admin123", url_prefix: str | None = None,
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
        self.basic_auth = tuple(basic_auth.split(":", 1)) if basic_auth else None
        super().__init__(args, {"REDIS_URL": broker_url, **(env or {})}, "monitor")

    @property
    def base_url(self) -> str:
        prefix = f"/{self.url_prefix.strip('/')}" if self.url_prefix else ""
        return f"http://127.0.0.1:{self.port}{prefix}"

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/automation/monitoring"

    def wait_ready(self, timeout_seconds: float = 30.0) -> "Monitor":
        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"monitor exited:\n{self.output()[-3000:]}")
            try:
                return requests.get(f"{self.base_url}/healthcheck", timeout=1,
                                    auth=self.basic_auth).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout_seconds=timeout_seconds, message="monitor /healthcheck")
        return self

    def token(self, scopes: str | None = None) -> str:
        body = {"scopes": scopes} if scopes else {}
        response = requests.post(f"{self.api}/token", json=body, auth=self.basic_auth, timeout=5)
        response.raise_for_status()
        return str(response.json()["access_token"])


class SyncWorkerProcess(_Process):
    """``python -m sync_worker`` as a separate process, configured by ``env``."""

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
                       ) -> "SyncWorkerProcess":
        def listening() -> bool:
            if not self.alive():
                raise AssertionError(f"sync worker exited:\n{self.output()[-3000:]}")
            return self.times_listening() > more_than
        wait_for(listening, timeout_seconds=timeout_seconds, message="sync worker listening")
        return self
