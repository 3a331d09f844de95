"""The process's one PostgreSQL pool: ``psycopg_pool``, opened once, the
schema migrated once per process start.

Blocking: call it from a thread that may block (the monitor's executor, the
sync worker's own threads), never from the IOLoop. A database that cannot
be reached surfaces as ``Unavailable`` (503 in the API; the sync worker backs
off and retries); the pool replaces connections the database dropped
(restart, network cut) when they are checked out, so the first request after
an outage does not get a dead one.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from flower_ops.core.errors import Unavailable
from flower_ops.db.migrate import migrate
from flower_ops.db.partitions import ensure_ahead

logger = logging.getLogger(__name__)

# TCP keepalives: a connection whose peer vanished is found in ~25 s, not hours
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
               "keepalives_count": 3}


def unavailable(exc: BaseException) -> Unavailable:
    return Unavailable("database unavailable", {"reason": str(exc)[:300]})


class Database:
    """One pool of autocommit connections to ``url``.

    ``connection()`` lends one for a block of work; ``hold()``/``give_back()``
    lend one for as long as the caller needs it (the sync worker's leader
    lock lives on such a connection). ``configure`` runs on every new
    connection (the sync worker creates its staging tables there).
    """

    def __init__(self, *, url: str, application_name: str, max_size: int = 4,
                 min_size: int = 1, timeout_seconds: float = 5.0,
                 connect_timeout_seconds: float = 5.0,
                 statement_timeout_seconds: float | None = None,
                 configure: Callable[[psycopg.Connection], None] | None = None) -> None:
        self.url = url
        self._timeout = timeout_seconds
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": application_name,
                                  "connect_timeout": max(1, int(connect_timeout_seconds)),
                                  **_KEEPALIVES}
        if statement_timeout_seconds is not None:
            kwargs["options"] = f"-c statement_timeout={int(statement_timeout_seconds * 1000)}"
        self._pool = ConnectionPool(
            url, kwargs=kwargs, min_size=min(min_size, max_size), max_size=max_size,
            open=False, timeout=timeout_seconds, name=application_name,
            check=ConnectionPool.check_connection, configure=configure,
            # psycopg_pool's reconnect backoff doubles without a cap until this
            # timeout; past it the attempt ends and the next checkout starts a
            # new one, so retries stay a few seconds apart however long the outage
            reconnect_timeout=max(5.0, 2 * timeout_seconds))
        self._lock = threading.Lock()
        self._opened = False
        self._migrated = False
        self._closed = False
        self._failed: tuple[float, Unavailable] | None = None

    def open(self) -> None:
        """Open the pool and bring the schema up to date (once per process).

        Raises ``Unavailable`` when the database cannot be reached; the next
        call (or the next ``connection()``) tries again. Callers that waited
        for the lock while an attempt failed get that answer at once rather
        than each waiting out an attempt of their own (during an outage,
        requests would otherwise queue for the pool's timeout each).
        """
        asked = time.monotonic()
        with self._lock:
            failed = self._failed
            if failed is not None and failed[0] >= asked:
                raise Unavailable(failed[1].message, failed[1].detail)
            if self._closed:
                raise Unavailable("database closed", {"reason": "the process is stopping"})
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True
            if self._migrated:
                return
            try:
                with self._pool.connection(timeout=self._timeout) as conn:
                    migrate(conn)
                    self._ensure_partitions(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                error = unavailable(exc)
                self._failed = (time.monotonic(), error)
                raise error from exc
            self._migrated = True
            self._failed = None

    def _ensure_partitions(self, conn: psycopg.Connection) -> None:
        """Today's and tomorrow's partitions at least (the monitor writes
        retry rows; the sync worker's leader creates the rest ahead). A lock
        not granted in time is not fatal: they exist, or the next start or
        the leader's next pass makes them."""
        try:
            ensure_ahead(conn, days_ahead=1, partition_days=None)
        except psycopg.errors.LockNotAvailable as exc:
            logger.warning("partitions not created ahead now (%s); will try again", exc)

    @property
    def ready(self) -> bool:
        return self._migrated and not self._closed

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection for one block of work (committed as it goes: autocommit;
        use ``conn.transaction()`` for more). Connection failures, at checkout
        or during the work, raise ``Unavailable``."""
        if not self._migrated:
            self.open()
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise
            raise unavailable(exc) from exc

    def rows(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        """One read, its rows as dicts (the readers' common case)."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def hold(self) -> psycopg.Connection:
        """A connection kept until ``give_back``: for session state (advisory locks)."""
        if not self._migrated:
            self.open()
        try:
            return self._pool.getconn(timeout=self._timeout)
        except PoolTimeout as exc:
            raise unavailable(exc) from exc

    def give_back(self, conn: psycopg.Connection, *, discard: bool = False) -> None:
        """Return a held connection; closed first when ``discard`` (its session
        state, e.g. an advisory lock, must end with it)."""
        if discard and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        if self._opened:
            self._pool.putconn(conn)

    def connections_lost(self) -> int:
        """Connections the pool found dead at checkout and replaced, so far
        (a cut the caller never saw fail: still a reconnection to report)."""
        return int(self._pool.get_stats().get("connections_lost", 0))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._opened:
                self._pool.close(timeout=2.0)
