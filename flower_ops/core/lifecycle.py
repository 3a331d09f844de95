"""The task lifecycle, written once: states, statuses, events, time fields
and which state wins.

Celery names a task's states (``PENDING`` ... ``REVOKED``); the
``automation.job_executions.status`` column names them our way
(``pending`` ... ``cancelled``, SPEC §8). Both processes, the SQL guard
(``automation.status_advances``, checked for parity against ``advances`` by
the tests) and the dashboard (served ``LIFECYCLE`` in the page) read them
from here.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

TASK_STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

# Celery state <-> automation.job_executions.status (SPEC §8)
STATE_TO_STATUS = {
    "PENDING": "pending", "RECEIVED": "received", "STARTED": "started",
    "SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry", "REVOKED": "cancelled",
}
STATUS_TO_STATE = {status: state for state, status in STATE_TO_STATUS.items()}
OPEN_STATUSES = ("pending", "received", "started", "retry")

# Lifecycle timestamps, in the order a task goes through them; each is a
# field of the API's task (``started``) and a column (``started_at``).
TIMESTAMP_FIELDS = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")

# Celery state -> the lifecycle timestamp that records reaching it
STATE_TIME_FIELDS = {
    "PENDING": "sent", "RECEIVED": "received", "STARTED": "started", "SUCCESS": "succeeded",
    "FAILURE": "failed", "RETRY": "retried", "REVOKED": "revoked",
}
TIME_FIELD_STATES = {field: state for state, field in STATE_TIME_FIELDS.items()}

# Celery event type -> (Celery state, the lifecycle timestamp it sets)
EVENT_STATES = {
    "task-sent": ("PENDING", "sent"),
    "task-received": ("RECEIVED", "received"),
    "task-started": ("STARTED", "started"),
    "task-succeeded": ("SUCCESS", "succeeded"),
    "task-failed": ("FAILURE", "failed"),
    "task-retried": ("RETRY", "retried"),
    "task-revoked": ("REVOKED", "revoked"),
    "task-rejected": ("FAILURE", "failed"),   # a worker refused it: it will not run
}

# How far along a status is. Final statuses rank from FINAL_RANK up; among
# them a later outcome beats an earlier one only when the worker was lost.
STATUS_RANK = {
    "pending": 0, "received": 1, "started": 2, "retry": 3,
    "cancelled": 10, "failure": 11, "success": 12,
}
FINAL_RANK = 10
STATE_RANK = {state: STATUS_RANK[status] for state, status in STATE_TO_STATUS.items()}

# What an operator may do in which state (SPEC §4)
CANCELLABLE = frozenset({"PENDING", "RECEIVED", "STARTED"})
RETRYABLE = frozenset({"FAILURE", "REVOKED"})


def advances(cur: str | None, cur_at: float | None, cur_lost: bool,
             new: str | None, new_at: float | None) -> bool:
    """Does status ``new`` (at ``new_at``) replace ``cur``? Statuses are ours
    (``success``, ``cancelled``...), not Celery's names. The SQL twin is
    ``automation.status_advances``."""
    if new is None:
        return False
    if cur is None:
        return True
    cur_rank, new_rank = STATUS_RANK[cur], STATUS_RANK[new]
    if cur_rank >= FINAL_RANK:
        later = new_at is not None and cur_at is not None and new_at > cur_at
        return (cur_lost and later) or new_rank > cur_rank
    if new_rank >= FINAL_RANK:
        return True
    if new == "retry" or cur == "retry":
        if new_at is None:
            return False
        return cur_at is None or new_at > cur_at
    return new_rank > cur_rank


def further_state(a: str, b: str) -> str:
    """Of two Celery states of one task, the one further along (``a`` on a tie)."""
    return b if STATE_RANK.get(b, -1) > STATE_RANK.get(a, -1) else a


# Where a history step sits within one attempt: PENDING, RECEIVED, STARTED,
# then how the attempt ended (RETRY or an outcome, ordered by time)
ATTEMPT_END_STAGE = STATE_RANK["RETRY"]

# Steps whose reporter says which attempt they belong to: Celery's task-sent
# and task-received events carry the task's ``retries`` count
_NUMBERED_STATES = frozenset({"PENDING", "RECEIVED"})

Step = TypeVar("Step", bound=Mapping[str, Any])


# Flower's own state for a task a worker refused (``task-rejected``): the API,
# like the stored row (EVENT_STATES above), says FAILURE — it will not run
_MEMORY_ONLY_STATES = {"REJECTED": "FAILURE"}


def api_state(state: str) -> str:
    """A state of Flower's memory as the API says it: one of TASK_STATES."""
    return _MEMORY_ONLY_STATES.get(state, state)


def history_stage(state: str) -> int:
    """PENDING 0, RECEIVED 1, STARTED 2; RETRY, every outcome and any other
    state a history may hold (Flower's REJECTED) 3."""
    return min(STATE_RANK.get(state, ATTEMPT_END_STAGE), ATTEMPT_END_STAGE)


def in_lifecycle_order(steps: Iterable[Step]) -> list[Step]:
    """A task's history steps (mappings with ``state``, ``timestamp`` and,
    where known, ``retries``) in lifecycle order; each keeps its timestamp.

    Timestamps come from different clocks: ``task-sent`` from the
    publisher's, the rest from the worker's, so a publisher whose clock is
    ahead reports PENDING after RECEIVED. The rule:

    1. A task runs in attempts; each RETRY ends one, and the next begins
       (Celery's ``Task.retry`` publishes the next attempt, PENDING again,
       a moment before it reports the RETRY).
    2. A PENDING or RECEIVED step that carries ``retries`` belongs to
       attempt ``retries`` (Celery counts them). A PENDING without it
       belongs to the first attempt (the publish; Flower's memory keeps one
       step per state). Any other step belongs to the attempt its time falls
       in: the number of RETRY steps reported before it (worker clocks).
    3. Attempts in order; within one, PENDING, RECEIVED, STARTED, then RETRY
       or the outcome (``history_stage``); steps of one stage by time, then
       in the order given.

    So a publisher's clock never reorders a task's steps, and with retries
    the history reads PENDING, RECEIVED, STARTED, RETRY, PENDING, RECEIVED,
    STARTED, SUCCESS. Clocks of two workers that disagree by more than the
    time between one attempt's RETRY and the next attempt's steps can still
    misplace those worker steps.
    """
    listed = list(steps)
    times = [_step_time(step) for step in listed]
    attempts = [0] * len(listed)
    retries_seen = 0
    for position in sorted(range(len(listed)), key=lambda i: (times[i], i)):
        step = listed[position]
        state = step.get("state")
        numbered = step.get("retries")
        if state in _NUMBERED_STATES and isinstance(numbered, int) \
                and not isinstance(numbered, bool) and numbered >= 0:
            attempts[position] = numbered
        elif state != "PENDING":
            attempts[position] = retries_seen
        if state == "RETRY":
            retries_seen += 1
    order = sorted(range(len(listed)), key=lambda i: (
        attempts[i], history_stage(str(listed[i].get("state"))), times[i], i))
    return [listed[i] for i in order]


def with_one_outcome(steps: list[Step], state: str | None) -> list[Step]:
    """A history with one outcome: the task's own final ``state``.

    A worker announces ``task-revoked`` when it signals a running task's
    process, and a task that returns in that instant also reports SUCCESS
    (or FAILURE), which wins. Both events happened, but only one is the
    task's end: the other final step is not shown, so no history reads
    REVOKED beside (or after) the outcome that stood.
    """
    if state not in FINAL_STATES:
        return steps
    return [step for step in steps
            if step.get("state") not in FINAL_STATES or step.get("state") == state]


def outcome_times(state: str | None, times: Mapping[str, Any]) -> dict[str, Any]:
    """The lifecycle timestamps of a task in ``state``: of the outcome
    timestamps (``succeeded``, ``failed``, ``revoked``) only its own; the
    others are ends that did not stand (see ``with_one_outcome``)."""
    own = STATE_TIME_FIELDS.get(state or "")
    return {name: (None if name in _OUTCOME_TIME_FIELDS and state in FINAL_STATES
                   and name != own else times.get(name))
            for name in TIMESTAMP_FIELDS}


_OUTCOME_TIME_FIELDS = frozenset(STATE_TIME_FIELDS[s] for s in FINAL_STATES)


def _step_time(step: Mapping[str, Any]) -> float:
    value = step.get("timestamp")
    return float(value) if isinstance(value, (int, float)) else 0.0


def as_json() -> dict[str, Any]:
    """The lifecycle for the dashboard's script."""
    return {"states": list(TASK_STATES), "final": sorted(FINAL_STATES),
            "cancellable": sorted(CANCELLABLE), "retryable": sorted(RETRYABLE)}
