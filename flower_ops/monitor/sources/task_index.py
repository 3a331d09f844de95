"""Secondary indexes over Flower's tasks, kept up to date as events arrive.

Flower's ``/api/tasks`` walks every task for each request; these indexes don't:

* Per event we only note the task id as *dirty* (a set add). Flower's own
  per-event work is far larger, so the plugin's cost stays small.
* ``TaskIndex.sync()`` folds dirty tasks into sorted indexes: all tasks, and
  per state, task name, worker and queue. It runs before every query and on a
  short timer, always on the IOLoop thread (Flower's threading rule), so a
  query sees every event that has been applied to the state.

Tasks are ordered by a sort key fixed when a task is first indexed: its first
known timestamp in microseconds, with a sequence number in the low bits to
keep keys unique. That gives "newest first", time-range filters and keyset
cursors from one ordered structure.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from flower.events import EventsState
from sortedcontainers import SortedList

from flower_ops.core.lifecycle import api_state
from flower_ops.core.query import TaskQuery
from flower_ops.monitor.sources.combos import ComboCounts
from flower_ops.monitor.sources.flower_state import (
    ChangeListener,
    attach,
    task_first_timestamp,
    task_queue,
    task_worker,
)
from flower_ops.monitor.sources.index_keys import (
    NO_UNTIL,
    SEQ_BITS,
    SEQ_MASK,
    decode_cursor,
    key_bounds,
)

DIMENSIONS = ("state", "name", "worker", "queue")
CANDIDATES = -1  # a constraint's position for an explicit set of task ids
WALKED_COUNT = 20_000  # counts per state walk an index this small once


class TaskIndex:
    """Sorted secondary indexes over a task mapping (Flower's LRU of tasks)."""

    def __init__(self, state: EventsState) -> None:
        self.state = attach(state)
        self.listener = ChangeListener()
        self.state._flower_ops_listeners.append(self.listener)
        self._key_of: dict[str, int] = {}
        self._uuid_of: dict[int, str] = {}
        self._attrs: dict[str, tuple[str, str | None, str | None, str | None]] = {}
        self._all: SortedList = SortedList()
        self._buckets: dict[str, dict[str, SortedList]] = {d: {} for d in DIMENSIONS}
        self._seq = itertools.count(1)
        self._combos = ComboCounts()
        self.sync_count = 0
        # Called as observer(uuid, old_state, task) when a task's state changes
        self.observers: list[Callable[[str, str | None, Any], None]] = []
        # Called with every synced batch of changed task ids (the live feed)
        self.change_listeners: list[Callable[[set[str]], None]] = []
        # Tasks already in the state (persistent mode) are indexed on first sync
        self.listener.dirty.update(self.state.tasks.data.keys())

    def __len__(self) -> int:
        return len(self._all)

    def sync(self) -> set[str]:
        """Fold every task touched since the last call into the indexes.

        Returns the ids that changed (the live feed uses them).
        """
        dirty = self.listener.dirty
        if not dirty:
            return set()
        self.listener.dirty = set()
        tasks = self.state.tasks.data
        for uuid in dirty:
            task = tasks.get(uuid)
            if task is None:
                self._remove(uuid)
            else:
                self._upsert(uuid, task)
        self.sync_count += 1
        for listener in self.change_listeners:
            listener(dirty)
        return dirty

    def tick(self) -> None:
        """Timer callback: ``sync`` with nothing returned."""
        self.sync()

    def lookup(self, ids: Iterable[str]) -> dict[str, Any]:
        """Flower's task objects for those of ``ids`` it holds (synced first)."""
        self.sync()
        data = self.state.tasks.data
        return {task_id: data[task_id] for task_id in ids if task_id in data}

    def _upsert(self, uuid: str, task: Any) -> None:
        attrs = (api_state(task.state), task.name, task_worker(task), task_queue(task))
        old = self._attrs.get(uuid)
        if old == attrs:
            return
        key = self._key_of.get(uuid)
        if key is None:
            ts_us = int(task_first_timestamp(task) * 1_000_000)
            key = (ts_us << SEQ_BITS) | (next(self._seq) & SEQ_MASK)
            self._key_of[uuid] = key
            self._uuid_of[key] = uuid
            self._all.add(key)
        if old is not None:
            self._combos.remove(old)
        attrs = self._combos.add(attrs)
        for dim, old_value, new_value in zip(DIMENSIONS, old or (None,) * 4, attrs, strict=True):
            if old_value == new_value:
                continue
            if old_value is not None:
                self._discard(dim, old_value, key)
            if new_value is not None:
                bucket = self._buckets[dim].get(new_value)
                if bucket is None:
                    bucket = self._buckets[dim][new_value] = SortedList()
                bucket.add(key)
        self._attrs[uuid] = attrs
        if old is None or old[0] != attrs[0]:
            for observer in self.observers:
                observer(uuid, old[0] if old else None, task)

    def _remove(self, uuid: str) -> None:
        key = self._key_of.pop(uuid, None)
        if key is None:
            return
        del self._uuid_of[key]
        self._all.discard(key)
        attrs = self._attrs.pop(uuid)
        self._combos.remove(attrs)
        for dim, value in zip(DIMENSIONS, attrs, strict=True):
            if value is not None:
                self._discard(dim, value, key)

    def _discard(self, dim: str, value: str, key: int) -> None:
        bucket = self._buckets[dim].get(value)
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._buckets[dim][value]

    # -- reads ---------------------------------------------------------------

    def count_by(self, dim: str) -> dict[str, int]:
        return {value: len(keys) for value, keys in self._buckets[dim].items()}

    def values(self, dim: str) -> list[str]:
        return sorted(self._buckets[dim])

    def sort_key(self, uuid: str) -> int | None:
        return self._key_of.get(uuid)

    def query(self, query: TaskQuery, matches: Callable[[str], bool] | None = None, *,
              candidates: set[str] | None = None) -> tuple[list[str], int, str | None]:
        """Task ids for one page, the total matching, and the next cursor."""
        ids, total, next_cursor, _prev = self.page(query, matches, candidates=candidates)
        return ids, total, next_cursor

    def page(self, query: TaskQuery, matches: Callable[[str], bool] | None = None, *,
             candidates: set[str] | None = None
             ) -> tuple[list[str], int, str | None, str | None]:
        """Ids of one page, the total matching, the next and prev cursors
        (None: no page there); ``query.cursor``: the key the page comes after
        (``backward``: before). ``candidates`` (e.g. a text search's ids)
        filter like an index: walked when smallest, else checked per task."""
        self.sync()
        lo, hi = key_bounds(query.since, query.until)
        after = decode_cursor(query.cursor)
        backward = query.backward and after is not None
        # the walk goes the listing's way, or against it for a page before
        reverse = (query.order != "asc") != backward
        drivers, others = self._plan(query, candidates)
        if drivers is None:
            return [], 0, None, None

        def in_page_range(keys: SortedList) -> Iterator[int]:
            page_lo, page_hi = lo, hi
            if after is not None:
                if reverse:
                    page_hi = min(page_hi, after)
                else:
                    page_lo = max(page_lo, after + 1)
            return keys.irange(page_lo, page_hi, inclusive=(True, False), reverse=reverse)

        iters = [in_page_range(keys) for keys in drivers]
        ordered: Iterable[int] = (iters[0] if len(iters) == 1
                                  else heapq.merge(*iters, reverse=reverse))
        page: list[str] = []
        keys: list[int] = []
        has_more = False
        for key in ordered:
            uuid = self._uuid_of[key]
            if not self._accepts(uuid, others, matches):
                continue
            if len(page) == query.limit:
                has_more = True
                break
            page.append(uuid)
            keys.append(key)
        total = None
        if others and matches is None and candidates is None and lo == 0 and hi == NO_UNTIL:
            total = self._combos.total(query)  # two or more filters, no range or search
        if total is None:
            total = self._total(drivers, others, matches, lo, hi)
        if backward:
            page.reverse()
            keys.reverse()
        more_after = True if backward else has_more
        more_before = has_more if backward else after is not None
        next_cursor = str(keys[-1]) if more_after and keys else None
        prev_cursor = str(keys[0]) if more_before and keys else None
        return page, total, next_cursor, prev_cursor

    def count_by_state(self, query: TaskQuery, *, candidates: set[str] | None = None
                       ) -> dict[str, int]:
        """Tasks per state matching ``query`` but its states (cursor, limit
        aside): bisects for a time range alone; one walk of a small index the
        other filters select; else each state's bucket against them (``_total``)."""
        self.sync()
        lo, hi = key_bounds(query.since, query.until)
        drivers, others = self._plan(replace(query, states=frozenset()), candidates)
        counts: dict[str, int] = {}
        if drivers is None:
            return counts
        if drivers[0] is self._all and not others:
            return {state: keys.bisect_left(hi) - keys.bisect_left(lo)
                    for state, keys in self._buckets["state"].items()}
        if sum(len(keys) for keys in drivers) <= WALKED_COUNT:
            for keys in drivers:
                for key in keys.irange(lo, hi, inclusive=(True, False)):
                    uuid = self._uuid_of[key]
                    if not others or self._accepts(uuid, others, None):
                        state = self._attrs[uuid][0]
                        counts[state] = counts.get(state, 0) + 1
            return counts
        for state in list(self._buckets["state"]):
            drivers, others = self._plan(replace(query, states=frozenset({state})), candidates)
            if drivers is not None:
                counts[state] = self._total(drivers, others, None, lo, hi)
        return counts

    def _plan(self, query: TaskQuery, candidates: set[str] | None = None,
              ) -> tuple[list[SortedList] | None, list[tuple[int, Any]]]:
        """Pick the most selective filter to walk; check the rest per task."""
        constraints: list[tuple[int, list[SortedList], Any]] = []
        if query.states:
            buckets = [self._buckets["state"][s] for s in query.states
                       if s in self._buckets["state"]]
            constraints.append((0, buckets, frozenset(query.states)))
        prefix = query.name_prefix
        for position, dim in enumerate(DIMENSIONS[1:], start=1):
            value = getattr(query, dim)
            if dim == "name" and prefix is not None:
                # a prefix is the union of the buckets of every name it matches
                names = frozenset(n for n in self._buckets["name"] if n.startswith(prefix))
                constraints.append((position, [self._buckets["name"][n] for n in names],
                                    names))
            elif value is not None:
                bucket = self._buckets[dim].get(value)
                constraints.append((position, [bucket] if bucket is not None else [], value))
        if any(not buckets for _, buckets, _ in constraints) or (
                candidates is not None and not candidates):
            return None, []
        constraints.sort(key=lambda c: sum(len(b) for b in c[1]))
        walk = constraints[0][1] if constraints else [self._all]
        others = [(pos, value) for pos, _, value in constraints[1:]]
        if candidates is not None:
            # Walking the candidates needs their keys sorted first: worth it
            # only when they are clearly fewer than what the index would walk
            if len(candidates) * 2 <= sum(len(keys) for keys in walk):
                if constraints:
                    others.insert(0, (constraints[0][0], constraints[0][2]))
                key_of = self._key_of
                walk = [SortedList(k for k in map(key_of.get, candidates) if k is not None)]
            else:
                others.append((CANDIDATES, candidates))
        return walk, others

    def _accepts(self, uuid: str, others: list[tuple[int, Any]],
                 matches: Callable[[str], bool] | None) -> bool:
        if others:
            attrs = self._attrs[uuid]
            for position, value in others:
                if position == CANDIDATES:
                    if uuid not in value:
                        return False
                    continue
                actual = attrs[position]
                if isinstance(value, frozenset):    # any of some states or names
                    if actual not in value:
                        return False
                elif actual != value:
                    return False
        return matches is None or matches(uuid)

    def _total(self, drivers: list[SortedList], others: list[tuple[int, Any]],
               matches: Callable[[str], bool] | None, lo: int, hi: int) -> int:
        if not others and matches is None:
            return sum(keys.bisect_left(hi) - keys.bisect_left(lo) for keys in drivers)
        if matches is None and lo == 0 and hi == NO_UNTIL:
            count = self._count_by_sets(drivers, others)
            if count is not None:
                return count
        # Counting a conjunction walks the smallest index only, never all tasks
        uuid_of = self._uuid_of
        return sum(1 for keys in drivers
                   for key in keys.irange(lo, hi, inclusive=(True, False))
                   if self._accepts(uuid_of[key], others, matches))

    def _count_by_sets(self, drivers: list[SortedList],
                       others: list[tuple[int, Any]]) -> int | None:
        """A conjunction's count by intersecting index buckets at C speed,
        when that beats checking each task of the smallest one (~30x dearer
        per task); None when it does not."""
        walked = sum(len(keys) for keys in drivers)
        buckets = []
        rest = []
        for position, value in others:
            if position > 0 and not isinstance(value, frozenset):
                bucket = self._buckets[DIMENSIONS[position]].get(value)
                if bucket is None:
                    return 0
                buckets.append(bucket)
            else:
                rest.append((position, value))
        if not buckets:
            if len(rest) == 1 and rest[0][0] == CANDIDATES and drivers[0] is self._all:
                return len(rest[0][1] & self._key_of.keys())  # a search alone
            return None
        if walked + sum(len(b) for b in buckets) > 30 * walked:
            return None
        keys: set[int] = set()
        for driver in drivers:
            keys.update(driver)
        for bucket in buckets:
            keys.intersection_update(bucket)
        if rest:
            uuid_of = self._uuid_of
            return sum(1 for key in keys if self._accepts(uuid_of[key], rest, None))
        return len(keys)
