"""Listing cursors, ``source=all`` (memory and PostgreSQL history as one
list) and counts per state.

A cursor is ``<source><way><position>``: source ``m`` (memory), ``d``
(PostgreSQL) or ``a`` (all); way ``n`` (the page after the position) or
``p`` (the page before it); the position is the index key (memory) or
``(first seen µs, id)`` (``core.query.encode_position``).

``source=all`` lists PostgreSQL's rows (all history, ordered by first seen)
with Flower's memory laid over them: a task memory holds is shown as memory
has it (``memory+db``), and a task memory knows better than PostgreSQL —
no row yet (sent, not flushed), or a state the row has not reached — is
listed from memory alone, at its place, and its row (if any) left out. Which
memory tasks PostgreSQL agrees with is learned as queries ask
(``StoredStates``), so a query asks only about tasks that changed since.
"""
from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import FINAL_STATES
from flower_ops.core.query import (
    Position,
    TaskPage,
    TaskQuery,
    decode_position,
    encode_position,
    name_matches,
)
from flower_ops.db.history import task_from_row
from flower_ops.db.listing import Snapshot, StateCounts, walks_descending
from flower_ops.monitor.sources.flower_state import task_first_timestamp, task_queue, task_worker
from flower_ops.monitor.sources.task_index import TaskIndex

if TYPE_CHECKING:
    from flower_ops.db.history import PgHistory

MEMORY_CURSOR, DB_CURSOR, ALL_CURSOR = "m", "d", "a"
SOURCE_OF_CURSOR = {MEMORY_CURSOR: "memory", DB_CURSOR: "db", ALL_CURSOR: "all"}
NEXT, PREV = "n", "p"
# what PostgreSQL is right about when memory missed a task's end
_STORED_OUTCOME = ("state", "result", "exception", "traceback", "runtime", "succeeded",
                   "failed", "revoked", "retries", "timestamp")
# what memory may not know of a task the row knows (an event Flower let go)
_KEPT_WHEN_UNKNOWN = ("name", "worker", "queue", "sent", "received", "started")


def encode_cursor(kind: str, raw: str | None, *, backward: bool = False) -> str | None:
    return f"{kind}{PREV if backward else NEXT}{raw}" if raw is not None else None


def split_cursor(cursor: str | None) -> tuple[str | None, bool, str | None]:
    """(source letter, is a prev, position) of ``cursor``; (None, False, None) for none."""
    if not cursor:
        return None, False, None
    kind, way, raw = cursor[:1], cursor[1:2], cursor[2:]
    if kind not in SOURCE_OF_CURSOR or way not in (NEXT, PREV) or not raw:
        raise InvalidQuery("invalid cursor", {"cursor": cursor[:100]})
    return kind, way == PREV, raw


def scoped(query: TaskQuery, kind: str) -> TaskQuery:
    """``query`` with its cursor decoded for the ``kind`` listing; a cursor
    another source issued is a 400."""
    cursor_kind, backward, raw = split_cursor(query.cursor)
    if cursor_kind is not None and cursor_kind != kind:
        raise InvalidQuery(f"this cursor belongs to source={SOURCE_OF_CURSOR[cursor_kind]}",
                           {"cursor": (query.cursor or "")[:100],
                            "source": SOURCE_OF_CURSOR[kind]})
    return replace(query, cursor=raw, backward=backward and raw is not None)


def source_of(query: TaskQuery) -> str:
    """memory, db or all: ``source``, or for ``auto`` the cursor's (memory without one)."""
    if query.source != "auto":
        return query.source
    kind = split_cursor(query.cursor)[0]
    return SOURCE_OF_CURSOR[kind] if kind else "memory"


def memory_counts(index: TaskIndex, query: TaskQuery,
                  candidates: set[str] | None) -> dict[str, int]:
    """Tasks in memory per state for ``query``'s other filters, from the
    index (``TaskIndex.count_by_state``)."""
    return index.count_by_state(query, candidates=candidates)


class StoredStates:
    """Which tasks in memory PostgreSQL agrees with (a row in the same
    state), learned from ``source=all`` snapshots; the others are pending."""

    def __init__(self, tasks: Callable[[], Mapping[str, Any]]) -> None:
        self._tasks = tasks
        self.agreed: dict[str, str] = {}        # id -> memory's state when it agreed
        self.pending: set[str] = set(tasks())

    def changed(self, ids: set[str]) -> None:
        """An index change batch (``TaskIndex.change_listeners``)."""
        tasks = self._tasks()
        for uuid in ids:
            task = tasks.get(uuid)
            if task is None:
                self.agreed.pop(uuid, None)
                self.pending.discard(uuid)
            elif self.agreed.get(uuid) != task.state:
                self.pending.add(uuid)

    def asked(self) -> dict[str, str]:
        tasks = self._tasks()
        return {uuid: tasks[uuid].state for uuid in self.pending if uuid in tasks}

    def learn(self, asked: Mapping[str, str], snapshot: Snapshot) -> None:
        tasks = self._tasks()
        for uuid, state in asked.items():
            task = tasks.get(uuid)
            if uuid not in snapshot.differing and task is not None and task.state == state:
                self.agreed[uuid] = state
                self.pending.discard(uuid)


def overlaid(stored: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """A row with memory's summary laid over it (both as they leave)."""
    out = {**stored, **summary, "source": "memory+db"}
    if not summary.get("args_exact") and stored.get("args_exact"):
        out.update(args=stored["args"], kwargs=stored["kwargs"], args_exact=True)
    if summary.get("state") not in FINAL_STATES and stored.get("state") in FINAL_STATES:
        # memory missed the end; the sync worker's reconciliation did not
        out.update({key: stored.get(key) for key in _STORED_OUTCOME})
    for key in _KEPT_WHEN_UNKNOWN:
        if out.get(key) is None:
            out[key] = stored.get(key)
    return out


class AllSources:
    """``source=all`` listings and counts, given PostgreSQL."""

    def __init__(self, *, index: TaskIndex, history: PgHistory,
                 run_blocking: Callable[..., asyncio.Future[Any]],
                 summary: Callable[[str, Any], dict[str, Any]],
                 present: Callable[[dict[str, Any]], dict[str, Any]],
                 search: Callable[[str], set[str]]) -> None:
        self.index = index
        self.history = history
        self._run_blocking = run_blocking
        self._summary = summary
        self._present = present
        self._search = search
        # made on the first question: a monitor nobody asks pays nothing per event
        self._states: StoredStates | None = None

    @property
    def tasks(self) -> Any:
        return self.index.state.tasks.data

    async def _snapshot(self, query: TaskQuery, *, counts: bool) -> Snapshot:
        self.index.sync()
        if self._states is None:
            self._states = StoredStates(lambda: self.tasks)
            self.index.change_listeners.append(self._states.changed)
        asked = self._states.asked()
        snapshot: Snapshot = await self._run_blocking(self.history.listing.snapshot, query,
                                                      asked, counts)
        self.index.sync()
        self._states.learn(asked, snapshot)
        return snapshot

    def _memory_side(self, query: TaskQuery, snapshot: Snapshot, *, states: bool = True
                     ) -> list[tuple[Position, str]]:
        """The tasks memory answers for that match ``query``, with their places."""
        tasks = self.tasks
        hits = self._search(query.search) if query.search and snapshot.differing else None
        since = query.since * 1_000_000 if query.since is not None else None
        until = query.until * 1_000_000 if query.until is not None else None
        found: list[tuple[Position, str]] = []
        for uuid in snapshot.differing:
            task = tasks.get(uuid)
            if task is None or (states and query.states and task.state not in query.states):
                continue
            if (query.name and not name_matches(query.name, task.name)) or (
                    query.worker and task_worker(task) != query.worker) or (
                    query.queue and task_queue(task) != query.queue) or (
                    hits is not None and uuid not in hits):
                continue
            stored = snapshot.stored.get(uuid)
            micros = stored[1] if stored else round(task_first_timestamp(task) * 1_000_000)
            if (since is not None and micros < since) or (until is not None and micros >= until):
                continue
            found.append(((micros, uuid), uuid))
        return found

    async def list(self, query: TaskQuery) -> TaskPage:
        """A page of ``query`` (its cursor decoded: ``scoped``)."""
        position = decode_position(query.cursor) if query.cursor else None
        snapshot = await self._snapshot(query, counts=False)
        assert snapshot.page is not None
        rows = snapshot.page
        walk_desc = walks_descending(query)
        backward = query.backward and query.cursor is not None
        memory = self._memory_side(query, snapshot)
        total = rows.total + len(memory)
        if position is not None:
            memory = [m for m in memory if (m[0] < position if walk_desc else m[0] > position)]
        memory.sort(reverse=walk_desc)
        in_walk = list(reversed(rows.rows)) if backward else rows.rows
        stored = [((r["first_seen_us"], r["execution_id"]), r) for r in in_walk]
        db_more = rows.more_before if backward else rows.more_after
        limit = query.limit
        merged: list[tuple[Position, Any]] = list(heapq.merge(
            stored, memory, key=lambda item: item[0], reverse=walk_desc))
        more = db_more or len(merged) > limit
        items = merged[:limit]
        if backward:
            items.reverse()
        more_after = True if backward else more
        more_before = more if backward else position is not None
        tasks = self.tasks
        page: list[dict[str, Any]] = []
        for _, item in items:
            if isinstance(item, str):
                page.append({**self._summary(item, tasks[item]), "source": "memory"})
                continue
            row = self._present(task_from_row(item))
            task = tasks.get(row["id"])
            page.append(overlaid(row, self._summary(row["id"], task)) if task is not None
                        else row)
        return TaskPage(
            tasks=page, total=total, source="all",
            extra={"total_estimated": rows.total_estimated},
            next=encode_cursor(ALL_CURSOR, encode_position(items[-1][0]))
            if more_after and items else None,
            prev=encode_cursor(ALL_CURSOR, encode_position(items[0][0]), backward=True)
            if more_before and items else None)

    async def counts(self, query: TaskQuery) -> dict[str, int]:
        """Tasks per state for ``query``'s other filters, over the same
        view as ``list``."""
        snapshot = await self._snapshot(query, counts=True)
        counts = StateCounts(snapshot.counts)
        counts.estimated = getattr(snapshot.counts, "estimated", frozenset())
        tasks = self.tasks
        for _, uuid in self._memory_side(query, snapshot, states=False):
            state = tasks[uuid].state
            counts[state] = counts.get(state, 0) + 1
        return counts
