"""Capped exponential backoff with jitter, for every network loop."""
from __future__ import annotations

import random


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
