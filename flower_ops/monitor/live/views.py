"""Window subscriptions: a dashboard receives what it shows (docs/live-feed.md).

A client that subscribes with ``"mode": "window"`` is not sent every task
change. It is sent its *window*: the newest ``limit`` tasks matching its
filters, plus the tasks it names in ``ids`` (a task page, the rows of a
listing page). Every ``VIEW_SECONDS`` each window is read again from the
index and compared with what its clients were last sent; one ``view``
message says what differs:

* ``rows``: tasks new to the window, whole (as in ``GET /tasks``, nulls left out);
* ``changed``: for tasks already in it, ``id`` and only the fields that changed;
* ``left``: ids no longer in it (newer tasks pushed them out, they stopped
  matching, or Flower's memory dropped them);
* ``total``: the tasks matching the filters in memory.

Clients whose (filters, limit, ids) are equal share one ``WindowView``: the
message is built and encoded once and the same bytes go to each of them. A
client joining a window gets a snapshot of the window *as last sent*, so the
next ``view`` message applies to exactly what it holds.

IOLoop thread only, like the rest of the feed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.times import now_iso
from flower_ops.monitor.live.fanout import FanOut
from flower_ops.monitor.live.filters import MAX_SNAPSHOT_TASKS, SNAPSHOT_TASKS, Filters
from flower_ops.monitor.live.protocol import encode
from flower_ops.monitor.live.snapshots import Snapshots, shown, task_time
from flower_ops.monitor.live.subscriber import Subscriber
from flower_ops.monitor.services.tasks import TaskQueryService

VIEW_SECONDS = 0.5
MAX_IDS = 500
MAX_ID_TEXT = 255
MODES = ("all", "window")


@dataclass(frozen=True)
class ViewKey:
    """What a window client shows: the newest ``limit`` tasks matching
    ``filters``, and the tasks ``ids``."""

    filters: Filters
    limit: int
    ids: frozenset[str] = frozenset()

    def as_json(self) -> dict[str, Any]:
        return {"mode": "window", "limit": self.limit, "ids": sorted(self.ids)}


def parse_mode(raw: Any) -> str:
    if raw is None:
        return "all"
    if raw not in MODES:
        raise InvalidQuery("mode must be 'all' or 'window'", {"allowed": list(MODES)})
    return str(raw)


def parse_window(body: dict[str, Any], filters: Filters) -> ViewKey:
    """The window of a ``subscribe`` (or first ``auth``) message in window mode."""
    raw_ids = body.get("ids")
    if raw_ids is None:
        ids: frozenset[str] = frozenset()
    elif (not isinstance(raw_ids, list) or len(raw_ids) > MAX_IDS
          or not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_TEXT for i in raw_ids)):
        raise InvalidQuery(f"ids must be a list of at most {MAX_IDS} task ids")
    else:
        ids = frozenset(raw_ids)
    limit = body.get("limit")
    if limit is None:
        limit = SNAPSHOT_TASKS
    if (isinstance(limit, bool) or not isinstance(limit, int)
            or not 0 <= limit <= MAX_SNAPSHOT_TASKS):
        raise InvalidQuery(f"limit must be an integer between 0 and {MAX_SNAPSHOT_TASKS} "
                           "in window mode")
    return ViewKey(filters=filters, limit=limit, ids=ids)


@dataclass
class WindowView:
    """One window and the clients that share it."""

    key: ViewKey
    subscribers: set[Subscriber] = field(default_factory=set)
    # id -> the summary last sent (SummaryCache's object: unchanged tasks keep it)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: int = 0
    primed: bool = False

    def read(self, snapshots: Snapshots, tasks: TaskQueryService
             ) -> tuple[dict[str, dict[str, Any]], int]:
        """The window now, from the index: id -> summary, and the total."""
        rows: dict[str, dict[str, Any]] = {}
        total = 0
        if self.key.limit:
            listing = snapshots.task_list(self.key.filters, self.key.limit)
            rows = {t["id"]: t for t in listing["tasks"]}
            total = listing["total"]
        if self.key.ids:
            summaries = tasks.summaries
            for uuid, task in tasks.index.lookup(self.key.ids).items():
                if uuid not in rows:
                    rows[uuid] = summaries.get(uuid, task)
        return rows, total

    def prime(self, snapshots: Snapshots, tasks: TaskQueryService) -> None:
        if not self.primed:
            self.rows, self.total = self.read(snapshots, tasks)
            self.primed = True

    def advance(self, snapshots: Snapshots, tasks: TaskQueryService) -> dict[str, Any] | None:
        """Read the window again; what changed since it was last sent, or None."""
        rows, total = self.read(snapshots, tasks)
        old = self.rows
        added: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for uuid, summary in rows.items():
            before = old.get(uuid)
            if before is None:
                added.append(shown(summary))
            elif before is not summary:
                delta = {k: v for k, v in summary.items() if before.get(k) != v}
                delta.update({k: None for k in before if k not in summary})
                if delta:
                    changed.append({"id": uuid, **delta})
        left = [uuid for uuid in old if uuid not in rows]
        self.rows = rows
        if not (added or changed or left) and total == self.total:
            return None
        self.total = total
        added.sort(key=task_time)
        return {"rows": added, "changed": changed, "left": left, "total": total}

    def snapshot_tasks_json(self) -> str:
        """The window as last sent, newest first, for a snapshot."""
        ordered = sorted(self.rows.values(), key=task_time, reverse=True)
        return encode({"tasks": [shown(t) for t in ordered], "total": self.total})


class Views:
    """Every window with clients; ``tick`` sends each its ``view`` message."""

    def __init__(self, *, snapshots: Snapshots, tasks: TaskQueryService,
                 next_seq: Callable[[], int], fanout: FanOut) -> None:
        self.snapshots = snapshots
        self.tasks = tasks
        self.next_seq = next_seq
        self.fanout = fanout
        self.windows: dict[ViewKey, WindowView] = {}
        self.stats = {"ticks": 0, "view_messages": 0}

    def join(self, sub: Subscriber, key: ViewKey | None) -> WindowView | None:
        """``sub`` shows window ``key`` from now on (None: no window)."""
        self.leave(sub)
        if key is None:
            return None
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = WindowView(key=key)
        window.prime(self.snapshots, self.tasks)
        window.subscribers.add(sub)
        sub.view = key
        return window

    def leave(self, sub: Subscriber) -> None:
        key = sub.view
        if key is None:
            return
        sub.view = None
        window = self.windows.get(key)
        if window is not None:
            window.subscribers.discard(sub)
            if not window.subscribers:
                del self.windows[key]

    def subscribers(self) -> list[Subscriber]:
        return [sub for window in self.windows.values() for sub in window.subscribers]

    def tick(self) -> int:
        """One ``view`` message per window that changed, handed to the fan-out;
        returns the writes queued."""
        queued = 0
        self.stats["ticks"] += 1
        for window in list(self.windows.values()):
            change = window.advance(self.snapshots, self.tasks)
            if change is None:
                continue
            seq = self.next_seq()
            message = encode({"type": "view", "seq": seq, "time": now_iso(), **change}).encode()
            self.fanout.send(message, seq, list(window.subscribers))
            queued += len(window.subscribers)
        self.stats["view_messages"] += queued
        return queued
