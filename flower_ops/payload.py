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

    Exact when the publisher was instrumented; otherwise the repr is parsed as
    a Python literal where possible (not exact: it may have been truncated or
    hold reprs of objects), and kept as text where not.
    """
    if text is None:
        return None, False
    if not isinstance(text, str):
        return text, False
    if text.startswith(EXACT_PREFIX):
        try:
            return loads(text[len(EXACT_PREFIX):]), True
        except ValueError:
            return text, False
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text, False
    if isinstance(value, tuple):
        value = list(value)
    try:  # a truncated repr parses with Ellipsis in it, bytes and sets are not JSON
        return loads(dumps(value)), False
    except (TypeError, ValueError):
        return text, False
