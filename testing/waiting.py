"""Polling until a condition holds: the one way the harness waits."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], *, timeout_seconds: float = 20.0,
             interval_seconds: float = 0.1, message: str = "condition") -> T:
    """Call ``predicate`` every ``interval_seconds`` until it returns a truthy
    value, and return that value.

    Raises ``AssertionError`` naming ``message`` and the last value after
    ``timeout_seconds``; an exception from ``predicate`` propagates at once.
    """
    deadline = time.monotonic() + timeout_seconds
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_seconds)
    raise AssertionError(f"timed out after {timeout_seconds}s waiting for {message} "
                         f"(last value: {last!r})")
