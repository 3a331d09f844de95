"""Which replica is active: whoever holds a session-level advisory lock.

The lock lives on one connection held from the process's pool for the whole
term. It is released by discarding that connection: PostgreSQL drops a
session's advisory locks with the session, so a replica that dies, or whose
connection breaks, releases the lock the same way and a standby takes over.
"""
from __future__ import annotations

import psycopg

from flower_ops.db.pool import Database, unavailable


class LeaderLock:
    """Not thread-safe: the worker's main thread alone acquires, checks and
    releases it."""

    def __init__(self, *, database: Database, key: int) -> None:
        self._db = database
        self._key = key
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it. Raises ``Unavailable`` when the
        database cannot be reached."""
        if self._conn is None:
            self._conn = self._db.hold()
        try:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except psycopg.Error as exc:
            self.release()
            raise unavailable(exc) from exc
        if row and row[0]:
            return True
        # standby: this session holds nothing, the pool may lend it out again
        conn, self._conn = self._conn, None
        self._db.give_back(conn)
        return False

    def still_held(self) -> bool:
        """Whether the lock's connection still answers (if it does, the
        session, and so the lock, is still ours); a broken one is released."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self.release()
            return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._db.give_back(conn, discard=True)
