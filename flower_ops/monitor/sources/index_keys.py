"""The task index's sort keys and cursors (``task_index.py``).

A key is a task's first known timestamp in microseconds, shifted left by
``SEQ_BITS``, with a sequence number in the low bits to keep keys unique; a
cursor is a key as a decimal string.
"""
from __future__ import annotations

from flower_ops.core.errors import InvalidQuery

SEQ_BITS = 20
SEQ_MASK = (1 << SEQ_BITS) - 1
NO_UNTIL = 1 << 80


def key_bounds(since: float | None, until: float | None) -> tuple[int, int]:
    lo = int(since * 1_000_000) << SEQ_BITS if since is not None else 0
    hi = int(until * 1_000_000) << SEQ_BITS if until is not None else NO_UNTIL
    return lo, hi


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        value = int(cursor)
    except ValueError:
        raise InvalidQuery("invalid cursor", {"cursor": cursor}) from None
    if value < 0 or value >= 1 << 80:
        raise InvalidQuery("invalid cursor", {"cursor": cursor})
    return value
