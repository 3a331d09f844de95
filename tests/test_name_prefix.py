"""``name`` matches a task name exactly, or by prefix with a trailing ``*``
(SPEC §11), the same in Flower's memory, in PostgreSQL and in the live
feed's filters. Real worker, monitor, sync worker, Redis and PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flower_ops.core.query import name_matches
from flower_ops.monitor.live.filters import parse_filters
from testing.executions import statuses
from testing.services import PostgresService, RedisService
from testing.stack import Stack, running_stack
from testing.waiting import wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def tasks(redis_service: RedisService, redis_db: int, pg_service: PostgresService
          ) -> Iterator[tuple[Stack, dict[str, str]]]:
    from testing.apps import automation

    name = pg_service.create_database()
    database_url = pg_service.url(name)
    try:
        with running_stack(broker_url=redis_service.url(redis_db), database_url=database_url,
                           sync_env={"FLOWER_OPS_SYNC_FLUSH_INTERVAL_SECONDS": "0.2"}
                           ) as stack:
            yield from _three_tasks(stack, database_url, automation)
    finally:
        pg_service.drop_database(name)


def _three_tasks(stack: Stack, database_url: str, automation: Any
                 ) -> Iterator[tuple[Stack, dict[str, str]]]:
    ids = {"add": automation.add.delay(1, 2).id,
           "echo": automation.echo.delay("x").id,
           "fail": automation.fail.delay("boom").id}
    wait_for(lambda: all(status in ("success", "failure") for status in
                         statuses(database_url, list(ids.values())).values())
             and len(statuses(database_url, list(ids.values()))) == len(ids),
             message="the rows of the three tasks")
    yield stack, ids


@pytest.mark.parametrize("source", ["memory", "db", "auto"])
@pytest.mark.parametrize(("name", "expected"), [
    ("automation.add", {"add"}),            # exact
    ("automation.ad", set()),               # exact: a part of a name is not it
    ("automation.*", {"add", "echo", "fail"}),
    ("automation.e*", {"echo"}),
    ("automation.add*", {"add"}),
    ("automation._*", set()),               # _ and % are literal, not LIKE wildcards
    ("automation.%*", set()),
    ("other.*", set()),
    ("*", {"add", "echo", "fail"}),
])
def test_name_is_exact_or_a_prefix_with_a_trailing_star(
        tasks: tuple[Stack, dict[str, str]], source: str, name: str,
        expected: set[str]) -> None:
    stack, ids = tasks
    body = stack.get_json("/tasks", name=name, source=source, limit=100)
    found = {key for key, task_id in ids.items() if task_id in {t["id"] for t in body["tasks"]}}
    assert found == expected, (name, source, body)
    assert body["total"] == len(expected)
    for task in body["tasks"]:
        assert name_matches(name, task["name"])


def test_a_prefix_combines_with_other_filters(tasks: tuple[Stack, dict[str, str]]) -> None:
    stack, ids = tasks
    for source in ("memory", "db"):
        body = stack.get_json("/tasks", name="automation.*", state="FAILURE", source=source)
        assert [t["id"] for t in body["tasks"]] == [ids["fail"]], source


def test_feed_filters_take_a_prefix_too() -> None:
    filters = parse_filters({"name": ["reports.*", "automation.add"]})
    assert filters.matches({"name": "reports.daily", "state": "SUCCESS"})
    assert filters.matches({"name": "automation.add", "state": "SUCCESS"})
    assert not filters.matches({"name": "automation.addition", "state": "SUCCESS"})
    assert not filters.matches({"name": "report", "state": "SUCCESS"})
    assert not filters.matches({"name": None, "state": "SUCCESS"})
