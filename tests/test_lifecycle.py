"""The lifecycle is written once (flower_ops/core/lifecycle.py); everything
that names states, statuses or time fields agrees with it."""
from __future__ import annotations

import json
import re
import time
from importlib import resources

from flower_ops.core import lifecycle
from flower_ops.db.schema import TIME_COLUMNS
from flower_ops.monitor.http.dashboard import LIFECYCLE_JSON


def test_every_event_sets_a_known_state_and_its_time_field() -> None:
    for event, (state, field) in lifecycle.EVENT_STATES.items():
        assert state in lifecycle.TASK_STATES, event
        assert field in lifecycle.TIMESTAMP_FIELDS, event
    for state, field in lifecycle.STATE_TIME_FIELDS.items():
        assert lifecycle.EVENT_STATES[f"task-{_event_verb(state)}"] == (state, field)


def _event_verb(state: str) -> str:
    return {"PENDING": "sent", "RECEIVED": "received", "STARTED": "started",
            "SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried",
            "REVOKED": "revoked"}[state]


def test_states_statuses_and_ranks_cover_each_other() -> None:
    assert set(lifecycle.STATE_TO_STATUS) == set(lifecycle.TASK_STATES)
    assert set(lifecycle.STATUS_RANK) == set(lifecycle.STATE_TO_STATUS.values())
    finals = {s for s, r in lifecycle.STATUS_RANK.items() if r >= lifecycle.FINAL_RANK}
    assert {lifecycle.STATUS_TO_STATE[s] for s in finals} == lifecycle.FINAL_STATES
    assert set(lifecycle.OPEN_STATUSES) == set(lifecycle.STATUS_RANK) - finals
    assert lifecycle.CANCELLABLE.isdisjoint(lifecycle.FINAL_STATES)
    assert lifecycle.RETRYABLE <= lifecycle.FINAL_STATES


def test_further_state_prefers_the_state_further_along() -> None:
    assert lifecycle.further_state("STARTED", "REVOKED") == "REVOKED"
    assert lifecycle.further_state("SUCCESS", "STARTED") == "SUCCESS"
    assert lifecycle.further_state("PENDING", "PENDING") == "PENDING"


def test_the_database_knows_exactly_the_lifecycle_statuses_and_time_columns() -> None:
    sql = (resources.files("flower_ops.db") / "migrations" / "0001_execution_history.sql"
           ).read_text("utf-8")
    check = re.search(r"CHECK \(status IN \(([^)]*)\)\)", sql)
    assert check is not None
    assert set(re.findall(r"'(\w+)'", check.group(1))) == set(lifecycle.STATUS_RANK)
    for column in TIME_COLUMNS.values():
        assert re.search(rf"^\s+{column}\s+timestamptz", sql, re.MULTILINE), column


def test_the_page_gets_the_lifecycle_from_the_server() -> None:
    served = json.loads(LIFECYCLE_JSON)
    assert served["states"] == list(lifecycle.TASK_STATES)
    assert set(served["cancellable"]) == lifecycle.CANCELLABLE
    assert set(served["retryable"]) == lifecycle.RETRYABLE


def test_a_task_a_worker_rejected_is_failure_in_memory_as_in_postgresql() -> None:
    """Flower's memory calls it REJECTED; the row says failure (task-rejected →
    FAILURE): the API, the index's filters and counts say FAILURE too."""
    from flower.events import EventsState

    from flower_ops.core.lifecycle import EVENT_STATES
    from flower_ops.core.query import TaskQuery
    from flower_ops.monitor.services.tasks import task_summary
    from flower_ops.monitor.sources.task_index import TaskIndex

    state = EventsState()
    index = TaskIndex(state)
    now = time.time()
    # (after a task-received, Celery's state precedence keeps RECEIVED; the
    # merged views take the row's FAILURE then, as for any missed outcome)
    state.event({"type": "task-rejected", "uuid": "r1", "hostname": "w1",
                 "timestamp": now, "local_received": now, "clock": 1})
    assert state.tasks["r1"].state == "REJECTED"          # Flower's own view, untouched
    summary = task_summary(state.tasks["r1"])
    assert summary["state"] == "FAILURE" == EVENT_STATES["task-rejected"][0]
    assert summary["failed"] == now
    ids, total, _ = index.query(TaskQuery(states=frozenset({"FAILURE"})))
    assert (ids, total) == (["r1"], 1)
    assert index.count_by("state").get("FAILURE") == 1
