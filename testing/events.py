"""Celery event dicts for one task's lifecycle, to feed Flower's ``EventsState``
directly (no broker, no worker): index, search and ordering tests build
their state from these."""
from __future__ import annotations

from typing import Any

from celery.events import Event
from flower.events import EventsState

T0 = 1_700_000_000.0
"""A fixed epoch for event timestamps (2023-11-14), so orderings are repeatable."""


def task_events(uuid: str, *, name: str, final: str, at: float, worker: str = "w1@host",
                queue: str = "celery") -> list[dict[str, Any]]:
    """The events a task sends on its way to ``final`` (a Celery state),
    starting at ``at`` and 0.1-0.5 s apart."""
    events = [Event("task-sent", uuid=uuid, name=name, args="(1, 2)", kwargs="{}",
                    queue=queue, routing_key=queue, exchange="", hostname="client@host",
                    timestamp=at, clock=1, local_received=at)]
    if final == "PENDING":
        return events
    events.append(Event("task-received", uuid=uuid, name=name, args="(1, 2)", kwargs="{}",
                        hostname=worker, timestamp=at + 0.1, clock=2, local_received=at + 0.1))
    if final == "RECEIVED":
        return events
    if final == "REVOKED":
        events.append(Event("task-revoked", uuid=uuid, hostname=worker, terminated=False,
                            timestamp=at + 0.2, clock=3, local_received=at + 0.2))
        return events
    events.append(Event("task-started", uuid=uuid, hostname=worker, timestamp=at + 0.2, clock=3,
                        local_received=at + 0.2))
    if final == "SUCCESS":
        events.append(Event("task-succeeded", uuid=uuid, result="3", runtime=0.5,
                            hostname=worker, timestamp=at + 0.7, clock=4, local_received=at + 0.7))
    elif final == "FAILURE":
        events.append(Event("task-failed", uuid=uuid, exception="ValueError('boom')",
                            traceback="Traceback...", hostname=worker, timestamp=at + 0.7,
                            clock=4, local_received=at + 0.7))
    elif final == "RETRY":
        events.append(Event("task-retried", uuid=uuid, exception="RuntimeError('again')",
                            hostname=worker, timestamp=at + 0.7, clock=4, local_received=at + 0.7))
    return events


def feed(state: EventsState, events: list[dict[str, Any]]) -> None:
    """Apply ``events`` to ``state`` in order, as Flower's event thread would."""
    for event in events:
        state.event(event)
