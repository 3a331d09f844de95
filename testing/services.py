"""Redis and PostgreSQL for a test session or a suite run: the machine's, or embedded ones.

``FLOWER_OPS_TEST_SERVICES`` chooses: ``auto`` (default: the machine's
services on 127.0.0.1:6379 / :5432 when they answer, else embedded servers
from PyPI wheels), ``machine`` (fail if absent) or ``embedded`` (always start
our own). ``FLOWER_OPS_TEST_REDIS_URL`` / ``FLOWER_OPS_TEST_PG_URL`` point at
other servers.
"""
from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass, field

import psycopg
import redis

from flower_ops.demo.embedded import EmbeddedPostgres, EmbeddedRedis, port_open

MODE = os.environ.get("FLOWER_OPS_TEST_SERVICES", "auto").lower()
if MODE not in {"auto", "machine", "embedded"}:
    raise SystemExit(f"FLOWER_OPS_TEST_SERVICES: expected auto, machine or embedded, got {MODE!r}")

LOCK_PREFIX = "flower-ops-test:db-lock:"


@dataclass
class RedisService:
    """A Redis server; ``kind`` is ``machine`` or ``embedded``."""

    host: str
    port: int
    kind: str
    databases: int
    embedded: EmbeddedRedis | None = None
    _claim_token: str = field(default="", repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db)

    def claim_db(self) -> int:
        """A db number no other test session on this server is using.

        Concurrent test sessions (developers, CI) share the machine's Redis;
        each claims its own db with a lock key that expires if it dies.
        """
        admin = self.client(0)
        token = f"{os.getpid()}:{uuid.uuid4().hex}"
        for db in range(1, self.databases):
            if admin.set(LOCK_PREFIX + str(db), token, nx=True, ex=3 * 3600):
                self._claim_token = token
                return db
        raise RuntimeError("every Redis db is claimed by another test session")

    def release_db(self, db: int) -> None:
        """Give back a db this session claimed (another session's claim stays)."""
        admin = self.client(0)
        if admin.get(LOCK_PREFIX + str(db)) == self._claim_token.encode():
            admin.delete(LOCK_PREFIX + str(db))


def _redis_answers(host: str, port: int) -> bool:
    if not port_open(host, port):
        return False
    try:
        return bool(redis.Redis(host=host, port=port, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def start_redis() -> RedisService:
    """The machine's Redis, or an embedded one (see the module docstring)."""
    if MODE != "embedded" and _redis_answers("127.0.0.1", 6379):
        count = int(str(redis.Redis(port=6379).config_get("databases").get("databases", 16)))
        return RedisService("127.0.0.1", 6379, "machine", count)
    if MODE == "machine":
        raise SystemExit("FLOWER_OPS_TEST_SERVICES=machine but no Redis answers on 127.0.0.1:6379")
    server = EmbeddedRedis()
    server.start()
    return RedisService(server.host, server.port, "embedded", 32, server)


@dataclass
class PostgresService:
    """A PostgreSQL server that hands out throw-away databases."""

    admin_url: str
    kind: str
    embedded: EmbeddedPostgres | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def url(self, dbname: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; its name (``url(name)`` connects to it)."""
        name = f"fo_test_{os.getpid()}_{next(self._counter)}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_answers(url: str) -> bool:
    if not port_open("127.0.0.1", 5432):
        return False
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def start_postgres() -> PostgresService:
    """The machine's PostgreSQL, or an embedded one (see the module docstring)."""
    for candidate in ("postgresql://postgres@127.0.0.1:5432/postgres",
                      "postgresql://root@127.0.0.1:5432/postgres"):
        if MODE != "embedded" and _pg_answers(candidate):
            return PostgresService(candidate, "machine")
    if MODE == "machine":
        raise SystemExit("FLOWER_OPS_TEST_SERVICES=machine but no PostgreSQL answers on "
                         "127.0.0.1:5432")
    server = EmbeddedPostgres()
    server.start()
    return PostgresService(server.url(), "embedded", server)

