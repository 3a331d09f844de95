"""What a broker says about its queues: one adapter's answer, whatever the broker."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int
    unacked: int | None
    oldest_message_age_seconds: float | None = None
    by_priority: dict[str, int] = field(default_factory=dict)
    # Known only where the broker itself reports them (RabbitMQ); Redis gets
    # consumers from the workers' active queues and rates from events.
    consumers: int | None = None
    rate_in: float | None = None
    rate_out: float | None = None


@dataclass(frozen=True)
class BrokerSnapshot:
    transport: str
    queues: dict[str, QueueDepth]
    unacked_total: int | None
    taken_at: float
    source: str
    # Why this source and not a better one (e.g. the management API is down)
    detail: str | None = None


class QueueSource(Protocol):
    transport: str

    def fetch(self, queues: Iterable[str]) -> BrokerSnapshot: ...

    def close(self) -> None: ...


__all__ = ["BrokerSnapshot", "QueueDepth", "QueueSource"]
