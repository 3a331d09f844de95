"""A task listing's question and answer (``GET /tasks``), for memory and
PostgreSQL alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    source: str = "auto"            # auto | memory | db


@dataclass(frozen=True)
class TaskPage:
    tasks: list[dict[str, Any]]
    total: int
    next: str | None
    source: str = "memory"
    extra: dict[str, Any] = field(default_factory=dict)
