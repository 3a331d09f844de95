"""What a feed client subscribes to: any of some states, task names and queues."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.query import TaskQuery, name_matches

SNAPSHOT_TASKS = 50
MAX_SNAPSHOT_TASKS = 500
MAX_FILTER_VALUES = 50
MAX_FILTER_TEXT = 256


@dataclass(frozen=True)
class Filters:
    """What a subscriber wants: any of ``states``, any of ``names``, any of ``queues``."""

    states: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.states or self.names or self.queues)

    def matches(self, task: dict[str, Any]) -> bool:
        return ((not self.states or task.get("state") in self.states)
                and (not self.names or any(name_matches(n, task.get("name"))
                                           for n in self.names))
                and (not self.queues or task.get("queue") in self.queues))

    def as_json(self) -> dict[str, list[str]]:
        return {"state": sorted(self.states), "name": sorted(self.names),
                "queue": sorted(self.queues)}

    def queries(self, limit: int) -> list[TaskQuery]:
        """Index queries whose union is this filter (the index takes one name/queue)."""
        names: Iterable[str | None] = sorted(self.names) or [None]
        queues: Iterable[str | None] = sorted(self.queues) or [None]
        return [TaskQuery(states=self.states, name=n, queue=q, limit=limit)
                for n in names for q in queues]


ALL = Filters()


def parse_filters(raw: Any) -> Filters:
    """``{"state": [...], "name": [...], "queue": [...]}``; strings or lists."""
    if raw is None:
        return ALL
    if not isinstance(raw, dict):
        raise InvalidQuery("filters must be an object")
    aliases = {"state": "states", "states": "states", "name": "names", "names": "names",
               "queue": "queues", "queues": "queues"}
    unknown = sorted(set(raw) - set(aliases))
    if unknown:
        raise InvalidQuery("unknown filter", {"unknown": unknown, "allowed": ["state", "name",
                                                                           "queue"]})
    values: dict[str, frozenset[str]] = {}
    for key, value in raw.items():
        if value is None or value == "":
            continue
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise InvalidQuery(f"filter {key} must be a string or a list of strings")
        items = [v.strip() for v in items if v.strip()]
        if len(items) > MAX_FILTER_VALUES or any(len(v) > MAX_FILTER_TEXT for v in items):
            raise InvalidQuery(f"filter {key} is too long")
        target = aliases[key]
        values[target] = values.get(target, frozenset()) | frozenset(items)
    states = frozenset(s.upper() for s in values.get("states", frozenset()))
    bad = sorted(states - set(TASK_STATES))
    if bad:
        raise InvalidQuery("unknown state", {"unknown": bad, "allowed": list(TASK_STATES)})
    names = values.get("names", frozenset())
    queues = values.get("queues", frozenset())
    if len(names) * max(1, len(queues)) > MAX_FILTER_VALUES:
        raise InvalidQuery("too many name and queue combinations")
    return Filters(states=states, names=names, queues=queues)


def parse_limit(raw: Any) -> int:
    if raw is None:
        return SNAPSHOT_TASKS
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_SNAPSHOT_TASKS:
        raise InvalidQuery(f"limit must be an integer between 1 and {MAX_SNAPSHOT_TASKS}")
    return raw


def wants(filters: Filters, task: dict[str, Any], prev_states: dict[str, str | None]) -> bool:
    if filters.matches(task):
        return True
    # A task that just left a state filter is still sent once, so clients can
    # drop it from a list filtered by state.
    if filters.states and prev_states.get(task["id"]) in filters.states:
        return filters.matches({**task, "state": prev_states[task["id"]]})
    return False
