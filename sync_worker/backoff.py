"""Capped exponential backoff with jitter, for every network loop, and how
such a loop tells a lost connection (a warning, then retry) from a bug (a
traceback, then retry)."""
from __future__ import annotations

import random

from flower_ops.core.errors import Unavailable

# Connection errors of the clients we use that share no base class with the
# builtin ones (redis-py's, kombu's, amqp's)
_CONNECTION_ERROR_NAMES = ("OperationalError", "ConnectionError", "TimeoutError")


class Backoff:
    def __init__(self, *, initial_seconds: float = 0.5, max_seconds: float = 30.0,
                 multiplier: float = 2.0) -> None:
        self._initial = initial_seconds
        self._max = max_seconds
        self._multiplier = multiplier
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        """The wait before the next attempt: a random point in the upper half
        of the capped exponential window, so replicas do not retry in step."""
        ceiling = min(self._max, self._initial * self._multiplier ** self._attempt)
        self._attempt += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def is_connection_error(exc: BaseException) -> bool:
    """A broker, backend or database that went away (not a bug)."""
    return isinstance(exc, (Unavailable, ConnectionError, OSError)) or \
        type(exc).__name__ in _CONNECTION_ERROR_NAMES


def describe(exc: BaseException) -> str:
    """One line for a log: ``Unavailable`` with its reason, else the error."""
    if isinstance(exc, Unavailable) and isinstance(exc.detail, dict) and \
            exc.detail.get("reason"):
        return f"{exc.message}: {exc.detail['reason']}"
    return str(exc)
