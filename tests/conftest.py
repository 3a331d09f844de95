"""Session fixtures: real Redis and PostgreSQL (the machine's or embedded),
and real Celery worker and monitor processes."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from testing.processes import STARTED, kill_leftovers
from testing.services import PostgresService, RedisService, start_postgres, start_redis


@pytest.fixture(scope="module", autouse=True)
def no_process_outlives_its_module() -> Iterator[None]:
    """After a module (its fixtures torn down), what it started and left
    running is killed and named, so it cannot disturb the next modules."""
    since = len(STARTED)
    yield
    for leftover in kill_leftovers(since):
        print(f"\nkilled a process left running by this module: {leftover}")


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


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Headless Chromium for the browser tests, installed with apt-get when missing.

    Fails (never skips) when it cannot be installed: the page must be tested.
    """
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"browser tests need {CHROMIUM}: install it (apt-get install -y chromium) "
                    "or run the tests as root so they can install it", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200,
                              check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}); browser tests need "
                        f"{CHROMIUM}:\n{done.stderr[-2000:]}", pytrace=False)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is missing", pytrace=False)
    return CHROMIUM


def pytest_report_header(config: pytest.Config) -> str:
    return f"flower-ops test services: {os.environ.get('FLOWER_OPS_TEST_SERVICES', 'auto')}"
