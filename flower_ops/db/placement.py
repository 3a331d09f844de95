"""Which partition a written row goes to: its day (``partitions.py``).

A row's ``first_seen_day`` is fixed when the row is first written: every
later write of the task must name that day, or ``ON CONFLICT (execution_id,
first_seen_day)`` would miss the row and insert a second one in another
partition. So a writer, in its transaction, looks up the day of the rows
that exist (any partition) and gives new ones the UTC day of their first
timestamp, clamped into the partitions that exist (``DayWindow.clamp``).

The look-up probes the partitions of the last two days (and ahead) first,
then the older ones for the ids it did not find there only: the events of a
batch are mostly about tasks seen minutes ago. A task whose batch holds its
``task-sent`` event cannot have a row older than the day before it was sent
(every event of a task comes after it, and a row's day is that of the first
event written): a new task, the common case of a miss, is not looked for in
older partitions at all (but in the legacy one, while it exists).

Concurrency: rows are locked per row by the merge, as before. A legacy
partition (``0005``) being emptied by the mover is guarded by its lock
(``partitions.enter_writer``). What is left: two transactions writing the
*same new* task at once, one with a first timestamp before midnight UTC and
one after, each finding no row, would insert it twice, once per day. Only
sync-worker replicas that receive different events of one task at the same
moment around midnight can do that; the leader's maintenance finds and
folds such pairs (``duplicates.py``) within a reconciliation interval.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from flower_ops.db.partitions import DayWindow, enter_writer, utc_day
from flower_ops.db.schema import EXECUTIONS

RECENT_DAYS = 2

_LOOKUP = (f"SELECT execution_id, first_seen_day FROM {EXECUTIONS} "
           "WHERE execution_id = ANY(%s) AND first_seen_day {} %s")


@dataclass
class Placement:
    """The day of every task a transaction writes."""

    window: DayWindow
    days: dict[str, date]

    def __getitem__(self, task_id: str) -> date:
        return self.days[task_id]

    def history_day(self, task_id: str, occurred_at: float | None) -> date:
        """History rows go with their task's row."""
        day = self.days.get(task_id)
        return day if day is not None else self.window.clamp(utc_day(occurred_at))


def existing_days(conn: psycopg.Connection, task_ids: Sequence[str],
                  sent: Mapping[str, float | None] | None = None,
                  legacy: bool = True) -> dict[str, date]:
    """The day of each of ``task_ids`` that has a row; ``sent``: when the
    task was sent, where the batch knows it (see the module's docstring)."""
    if not task_ids:
        return {}
    split = utc_day(None) - timedelta(days=RECENT_DAYS - 1)
    found = {r[0]: r[1] for r in conn.execute(_LOOKUP.format(">="), (list(task_ids), split))}
    sent = sent or {}

    def older_possible(task_id: str) -> bool:
        at = sent.get(task_id)
        return legacy or at is None or utc_day(at) - timedelta(days=1) < split

    rest = [t for t in task_ids if t not in found and older_possible(t)]
    if rest:
        found.update({r[0]: r[1] for r in conn.execute(_LOOKUP.format("<"), (rest, split))})
    return found


def place(conn: psycopg.Connection, tasks: Sequence[tuple[str, float | None]],
          sent: Mapping[str, float | None] | None = None) -> Placement:
    """In the writer's transaction: (task id, first timestamp or None for
    now) → the day its row is in or goes to."""
    window = enter_writer(conn)
    days = existing_days(conn, [task_id for task_id, _ in tasks], sent, window.legacy)
    for task_id, first_seen in tasks:
        if task_id not in days:
            days[task_id] = window.clamp(utc_day(first_seen))
    return Placement(window, days)


def history_day(placement: Placement, task_id: str, occurred_at: float | None) -> date:
    return placement.history_day(task_id, occurred_at)
