"""Flower's own views stay stock with the plugin: its task page, ``/api/tasks``
and ``/api/task/info`` show the arguments Celery's ``saferepr`` makes, exactly
as for an app without ``instrument()``, while our API, the sync worker's rows
and retry keep the exact values. A real ``celery -A APP flower-ops`` monitor,
real prefork workers, the real sync worker, Redis and PostgreSQL."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery
from celery.utils.saferepr import saferepr
from flower.events import EventsState
from tornado.escape import xhtml_escape

from flower_ops.core.payload import EXACT_ARGS_FIELD, encode_exact, exact_fields
from flower_ops.monitor.services.capabilities import Capabilities
from flower_ops.monitor.services.search import search_text
from flower_ops.monitor.services.tasks import task_detail
from flower_ops.monitor.sources.task_index import TaskIndex
from testing.events import T0, feed, task_events
from testing.services import PostgresService, RedisService
from testing.settings import FAST_MONITOR_REFRESH, FAST_SYNC_WORKER
from testing.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(240)


def nested_argument() -> dict[str, Any]:
    """About 5 KB, nested past Celery's repr depth, with unicode and tuples."""
    rows = [{"id": i, "name": f"Zoë-{i} 日本語 ✓", "ratio": i / 7, "none": None,
             "deep": {"a": {"b": {"c": [i, "ü", (i, -i)]}}}} for i in range(40)]
    return {"rows": rows, "emoji": "🚀" * 20, "quote": "'\"</script>"}


def as_json(value: Any) -> Any:
    """What exact values read back as: JSON has lists where Python had tuples."""
    return json.loads(json.dumps(value))


def celery_repr(value: Any, app: Celery) -> str:
    """The ``argsrepr`` Celery makes for ``value`` (``AMQP.as_task_v2``)."""
    return saferepr(value, app.amqp.argsrepr_maxsize, maxlevels=app.conf.task_repr_maxlevels)


@pytest.fixture(scope="module")
def stack(redis_service: RedisService, redis_db: int,
          pg_service: PostgresService) -> Iterator[Stack]:
    db_name = pg_service.create_database()
    try:
        with running_stack(broker_url=redis_service.url(redis_db),
                           database_url=pg_service.url(db_name),
                           monitor_env=FAST_MONITOR_REFRESH, sync_env=FAST_SYNC_WORKER) as stack:
            yield stack
    finally:
        pg_service.drop_database(db_name)


@pytest.fixture(scope="module")
def plain_app(stack: Stack) -> Iterator[Celery]:
    """A publisher without ``instrument()``: what stock Flower is compared with."""
    app = Celery("plain-publisher", broker=stack.broker_url, backend=stack.broker_url,
                 set_as_current=False)
    app.conf.update(task_send_sent_event=True)
    yield app
    app.close()


def flower_get(stack: Stack, path: str) -> requests.Response:
    """A GET of Flower's own (its basic auth, not our tokens)."""
    response = requests.get(f"{stack.monitor.base_url}{path}", auth=stack.monitor.basic_auth,
                            timeout=10)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response


def flower_views(stack: Stack, task_id: str) -> dict[str, Any]:
    """The args and kwargs text in each of Flower's views of ``task_id``, and
    each view's whole text."""
    info = flower_get(stack, f"/api/task/info/{task_id}")
    listing = flower_get(stack, "/api/tasks?limit=1000")
    page = flower_get(stack, f"/task/{task_id}")
    listed = listing.json()[task_id]
    return {"info": (info.json()["args"], info.json()["kwargs"]),
            "list": (listed["args"], listed["kwargs"]),
            "texts": {"info": info.text, "list": listing.text, "page": page.text}}


def test_flower_shows_celerys_own_args_while_our_api_and_rows_stay_exact(
        stack: Stack, plain_app: Celery) -> None:
    from testing.apps import automation

    argument = nested_argument()
    args = (argument, 1.5, None, "ü", (1, 2))
    kwargs = {"k": argument, "t": (3, 4), "marker": uuid.uuid4().hex}
    instrumented = automation.echo.apply_async(args=args, kwargs=kwargs)
    plain = plain_app.send_task("automation.echo", args=args, kwargs=kwargs)
    ours = stack.wait_state(instrumented.id, "SUCCESS")
    stack.wait_state(plain.id, "SUCCESS")

    expected = (celery_repr(args, automation.app), celery_repr(kwargs, automation.app))
    assert len(expected[0]) < len(json.dumps(as_json(args)))    # really cut by Celery
    with_plugin = flower_views(stack, instrumented.id)
    without = flower_views(stack, plain.id)
    assert with_plugin["info"] == without["info"] == expected
    assert with_plugin["list"] == without["list"] == expected
    for view, text in with_plugin["texts"].items():
        assert "json:" not in text, view
        assert EXACT_ARGS_FIELD not in text, view
    page = with_plugin["texts"]["page"]
    assert xhtml_escape(expected[0]) in page and xhtml_escape(expected[1]) in page
    assert xhtml_escape(expected[0]) in without["texts"]["page"]

    # Our API: the exact values, for the same task
    assert ours["args"] == as_json(args) and ours["kwargs"] == as_json(kwargs)
    assert ours["args_exact"] is True
    listed = stack.get_json("/tasks", search=kwargs["marker"], limit=10)
    by_id = {task["id"]: task for task in listed["tasks"]}
    assert by_id[instrumented.id]["args"] == as_json(args)
    assert by_id[instrumented.id]["args_exact"] is True
    assert by_id[plain.id]["args_exact"] is False        # a repr cut at 1024 characters
    assert stack.get_json("/stats")["capabilities"]["exact_args"] is True

    # The sync worker's rows: exact for the instrumented publish only
    row = stack.wait_status(instrumented.id, "success")
    assert row["args"] == as_json(args) and row["kwargs"] == as_json(kwargs)
    assert row["args_exact"] is True
    assert stack.wait_status(plain.id, "success")["args_exact"] is False


def test_a_retry_reaches_the_worker_exactly_and_shows_stock_in_flower(
        stack: Stack, plain_app: Celery) -> None:
    from testing.apps import automation

    argument = nested_argument()
    failed = automation.fail.apply_async(kwargs={"message": argument})
    stack.wait_state(failed.id, "FAILURE")
    response = stack.post(f"/tasks/{failed.id}/retry")
    assert response.status_code == 200, response.text
    new_id = response.json()["new_id"]

    stack.wait_state(new_id, "FAILURE")
    rerun = stack.app.AsyncResult(new_id)
    rerun.backend.get_task_meta(new_id, cache=False)
    assert rerun.kwargs == as_json({"message": argument})    # what the worker received
    # Flower shows what it shows for a plain publish of the call the retry
    # made: the exact values (lists, as JSON has them), no positional args
    plain = plain_app.send_task("automation.fail", args=[],
                                kwargs=as_json({"message": argument}))
    stack.wait_state(plain.id, "FAILURE")
    views, stock = flower_views(stack, new_id), flower_views(stack, plain.id)
    assert views["info"] == views["list"] == stock["info"] == stock["list"]
    assert views["info"][1] == celery_repr(as_json({"message": argument}), automation.app)
    assert all("json:" not in text for text in views["texts"].values())
    detail = stack.task(new_id)
    assert detail["kwargs"] == as_json({"message": argument}) and detail["args_exact"] is True
    assert stack.wait_status(new_id, "failure")["args_exact"] is True


def test_an_earlier_publishers_exact_reprs_reach_flower_as_celerys_reprs() -> None:
    """A publisher of an earlier version (or a retry an uninstrumented monitor
    published) puts ``json:`` text into ``argsrepr``: Flower gets the repr
    Celery would have made, we keep the exact values."""
    state = EventsState(max_tasks_in_memory=100)
    index = TaskIndex(state)
    args, kwargs = ["ü" * 600, {"n": [1, 2]}, 3], {"k": "v" * 2000}
    events = task_events("legacy", name="job", final="SUCCESS", at=T0)
    for event in events:
        if event["type"] in ("task-sent", "task-received"):
            event["args"], event["kwargs"] = encode_exact(args), encode_exact(kwargs)
    feed(state, events)
    index.sync()

    task = state.tasks["legacy"]
    plain = Celery(set_as_current=False)
    assert task.as_dict()["args"] == celery_repr(args, plain)
    assert task.as_dict()["kwargs"] == celery_repr(kwargs, plain)
    assert "json:" not in repr(task.as_dict())
    detail = task_detail(task)
    assert detail["args"] == args and detail["kwargs"] == kwargs and detail["args_exact"]
    # the search sees the whole value, past the repr's cut
    assert "v" * 1500 in search_text(task) and "json:" not in search_text(task)


def test_stats_see_exact_arguments_when_task_sent_comes_last() -> None:
    """The capability is learnt from any change, not only a task's first one."""
    state = EventsState(max_tasks_in_memory=100)
    index = TaskIndex(state)
    capabilities = Capabilities(history_configured=False, probed={})
    index.observers.append(capabilities.observe)
    sent, received, *rest = task_events("late-sent", name="job", final="SUCCESS", at=T0)
    feed(state, [received])
    index.sync()
    assert capabilities.exact_args is False
    sent.update(exact_fields([1, 2], {}) or {})
    feed(state, [sent, *rest])
    index.sync()
    assert capabilities.exact_args is True and capabilities.sent_events is True
