"""A task listing's question and answer (``GET /tasks``), for memory and
PostgreSQL alike, and the listing position PostgreSQL and ``source=all``
cursors carry."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from flower_ops.core.errors import InvalidQuery


@dataclass(frozen=True)
class TaskQuery:
    """Filters, order and page of a task listing (``GET /tasks``)."""

    states: frozenset[str] = frozenset()
    name: str | None = None
    worker: str | None = None
    queue: str | None = None
    search: str | None = None
    since: float | None = None      # epoch seconds, inclusive
    until: float | None = None      # epoch seconds, exclusive
    limit: int = 50
    cursor: str | None = None
    order: str = "desc"             # newest first by default
    source: str = "auto"            # auto | memory | db | all
    backward: bool = False          # the cursor is a prev: the page before it

    @property
    def name_prefix(self) -> str | None:
        """The prefix ``name`` asks for when it ends with ``*``, else None."""
        return name_prefix(self.name)


def name_prefix(pattern: str | None) -> str | None:
    """``"reports.*"`` → ``"reports."``; an exact name (no trailing ``*``) → None."""
    return pattern[:-1] if pattern is not None and pattern.endswith("*") else None


def name_matches(pattern: str, name: str | None) -> bool:
    """A task name filter: the exact name, or a prefix with a trailing ``*``."""
    prefix = name_prefix(pattern)
    if prefix is None:
        return name == pattern
    return name is not None and name.startswith(prefix)


@dataclass(frozen=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    total: int
    next: str | None
    source: str = "memory"
    extra: dict[str, Any] = field(default_factory=dict)
    prev: str | None = None


# A place in a PostgreSQL (or source=all) listing: (first seen, in epoch
# microseconds; task id), the order of ``first_seen_at, execution_id``
Position = tuple[int, str]


def encode_position(position: Position) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, task_id = json.loads(raw)
        if isinstance(micros, int) and not isinstance(micros, bool) and isinstance(task_id, str):
            return micros, task_id
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise InvalidQuery("invalid cursor", detail={"cursor": cursor[:100]})
