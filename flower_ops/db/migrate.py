"""Versioned schema migrations, applied by every process at start-up.

Migrations are the ``migrations/NNNN_name.sql`` files of this package, applied
in order, each in its own transaction together with its row in
``automation.schema_migrations``. A transaction-level advisory lock serialises
processes that start at once: the second one waits, then finds nothing to do.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from flower_ops.db.prepare import prepare_partitions
from flower_ops.db.schema import MIGRATIONS, SCHEMA

logger = logging.getLogger(__name__)

# Any fixed 64-bit number; shared by every process that migrates this schema.
MIGRATION_LOCK_KEY = 0x466C6F7765724F70  # "FlowerOp"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    folder = resources.files("flower_ops.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {folder}: {versions}")
    return found


def migrate(conn_or_url: psycopg.Connection | str, *, up_to: int | None = None) -> list[int]:
    """Bring the schema up to date (or to version ``up_to``: tests of a
    migration); returns the versions applied now."""
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True, connect_timeout=10) as conn:
            return _migrate(conn, up_to)
    return _migrate(conn_or_url, up_to)


def _migrate(conn: psycopg.Connection, up_to: int | None) -> list[int]:
    applied_now: list[int] = []
    for migration in available_migrations():
        if up_to is not None and migration.version > up_to:
            break
        if migration.version in _PREPARE and not _applied(conn, migration.version):
            _PREPARE[migration.version](conn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            done = conn.execute(f"SELECT 1 FROM {MIGRATIONS} WHERE version = %s",
                                (migration.version,)).fetchone()
            if done:
                continue
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(f"INSERT INTO {MIGRATIONS} (version, name) "
                         "VALUES (%s, %s)", (migration.version, migration.name))
            applied_now.append(migration.version)
            logger.info("applied migration %s", migration.name)
    return applied_now


def _applied(conn: psycopg.Connection, version: int) -> bool:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS,)).fetchone()
    if not exists or not exists[0]:
        return False
    return conn.execute(f"SELECT 1 FROM {MIGRATIONS} WHERE version = %s",
                        (version,)).fetchone() is not None


# Work done before a migration's transaction, outside it (autocommit), so
# that it does not block writers: each step idempotent (a restart redoes
# what was not finished), processes serialised by a session advisory lock.
_PREPARE = {5: prepare_partitions}
