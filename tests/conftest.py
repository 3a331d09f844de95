"""Session fixtures: real Redis and PostgreSQL (the machine's or embedded),
and real Celery worker and monitor processes."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.support.services import PostgresService, RedisService, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisService]:
    service = start_redis()
    yield service
    if service.embedded is not None:
        service.embedded.cleanup()


@pytest.fixture(scope="session")
def redis_db(redis_service: RedisService) -> Iterator[int]:
    """This session's own Redis db (flushed by ``redis_url`` around each test)."""
    db = redis_service.claim_db()
    yield db
    redis_service.client(db).flushdb()
    redis_service.release_db(db)


@pytest.fixture
def redis_url(redis_service: RedisService, redis_db: int) -> Iterator[str]:
    client = redis_service.client(redis_db)
    client.flushdb()
    yield redis_service.url(redis_db)
    client.flushdb()


@pytest.fixture(scope="session")
def pg_service() -> Iterator[PostgresService]:
    service = start_postgres()
    yield service
    if service.embedded is not None:
        service.embedded.cleanup()


@pytest.fixture
def database_url(pg_service: PostgresService) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    name = pg_service.create_database()
    yield pg_service.url(name)
    pg_service.drop_database(name)


def pytest_report_header(config: pytest.Config) -> str:
    return f"flower-ops test services: {os.environ.get('FLOWER_OPS_TEST_SERVICES', 'auto')}"
