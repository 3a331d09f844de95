"""Exact task arguments.

Celery's events carry ``args``/``kwargs`` as a repr cut at 1024 characters,
which cannot be sent again. ``instrument(app)`` makes the publisher put an
exact JSON encoding into the message's ``argsrepr``/``kwargsrepr`` headers
(which Celery copies into ``task-sent`` and ``task-received`` events), marked
with ``EXACT_PREFIX``. Everything that reads event args goes through
``decode_args`` to get back values and whether they are exact.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from typing import Any

from kombu.utils.json import dumps, loads

EXACT_PREFIX = "json:"


def encode_exact(value: Any) -> str | None:
    """The exact encoding of ``value``, or None if it is not JSON-serializable."""
    try:
        return EXACT_PREFIX + dumps(value)
    except (TypeError, ValueError):
        return None


def decode_args(text: Any) -> tuple[Any, bool]:
    """(value, exact) from an event's ``args``/``kwargs`` field.

    A task's args text is the same in each of its events and is read again on
    every change and listing, so decoded values are memoized by text. Callers
    must treat the returned value as read-only.

    Exact when the publisher was instrumented; otherwise the repr is parsed as
    a Python literal where possible (not exact: it may have been truncated or
    hold reprs of objects), and kept as text where not.
    """
    if text is None:
        return None, False
    if not isinstance(text, str):
        return text, False
    return _decode_text(text)


@lru_cache(maxsize=8192)
def _decode_text(text: str) -> tuple[Any, bool]:
    if text.startswith(EXACT_PREFIX):
        try:
            return loads(text[len(EXACT_PREFIX):]), True
        except ValueError:
            return text, False
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text, False
    # A truncated repr parses with Ellipsis in it; bytes, sets and complex
    # numbers are literals too, but not JSON: keep those as text.
    if not _json_safe(value):
        return text, False
    return (list(value) if isinstance(value, tuple) else value), False


_SCALARS = (str, int, float, bool, type(None))


def _json_safe(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if depth > 100:
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_safe(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, (str, int, float, bool)) and _json_safe(item, depth + 1)
                   for key, item in value.items())
    return False
