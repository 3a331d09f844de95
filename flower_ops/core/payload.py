"""Exact task arguments.

Celery's events carry ``args``/``kwargs`` as a repr cut at 1024 characters
(``argsrepr``/``kwargsrepr``), which cannot be sent again. ``instrument(app)``
leaves those reprs as Celery makes them (Flower, ``celery inspect`` and
worker logs show what they show without us) and adds the exact JSON
encoding of the arguments to the ``task-sent`` event, in two fields of its
own (``EXACT_ARGS_FIELD``/``EXACT_KWARGS_FIELD``, each ``EXACT_PREFIX`` +
JSON). Flower keeps every field of an event on its task object but shows
only its own fields, so the exact text travels with the task through
Flower's memory (bounded by its LRU) unseen, and reaches the sync worker in
the same event. ``arguments`` reads a task's or an event's values back, and
whether they are exact.

Earlier versions put the exact text into ``argsrepr``/``kwargsrepr``
themselves; ``decode_args`` still reads that, and ``stock_event`` turns such
an event into the stock form for Flower.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from celery.utils.saferepr import saferepr
from kombu.utils.json import dumps, loads

EXACT_PREFIX = "json:"
EXACT_ARGS_FIELD = "flower_ops_args"
EXACT_KWARGS_FIELD = "flower_ops_kwargs"
# Celery's own ``AMQP.argsrepr_maxsize`` and ``task_repr_maxlevels`` defaults
REPR_MAX_CHARS = 1024
REPR_MAX_LEVELS = 3


def encode_exact(value: Any) -> str | None:
    """The exact encoding of ``value``, or None if it is not JSON-serializable."""
    try:
        return EXACT_PREFIX + dumps(value)
    except (TypeError, ValueError):
        return None


def is_exact_text(text: Any) -> bool:
    """Is ``text`` an exact encoding (``encode_exact``)?"""
    return isinstance(text, str) and text.startswith(EXACT_PREFIX)


def exact_fields(args: Any, kwargs: Any) -> dict[str, str] | None:
    """The event fields that carry ``args``/``kwargs`` exactly; None when
    they are not JSON-serializable (the reprs are all there is then)."""
    exact_args = encode_exact(list(args or ()))
    exact_kwargs = encode_exact(dict(kwargs or {}))
    if exact_args is None or exact_kwargs is None:
        return None
    return {EXACT_ARGS_FIELD: exact_args, EXACT_KWARGS_FIELD: exact_kwargs}


def decode_args(text: Any) -> tuple[Any, bool]:
    """(value, exact) from an event's ``args``/``kwargs`` field.

    A task's args text is the same in each of its events and is read again on
    every change and listing, so decoded values are memoized by text. Callers
    must treat the returned value as read-only.

    Exact for an exact encoding; otherwise the repr is parsed as a Python
    literal where possible (not exact: it may have been truncated or hold
    reprs of objects), and kept as text where not.
    """
    if text is None:
        return None, False
    if not isinstance(text, str):
        return text, False
    return _decode_text(text)


def arguments(exact_args: Any, exact_kwargs: Any, args_repr: Any, kwargs_repr: Any, *,
              decode: Callable[[Any], tuple[Any, bool]] = decode_args,
              ) -> tuple[Any, Any, bool]:
    """(args, kwargs, exact) of one task: from the exact fields when both
    decode exactly, else from the reprs (with ``decode``)."""
    if exact_args is not None and exact_kwargs is not None:
        args, args_exact = decode_args(exact_args)
        kwargs, kwargs_exact = decode_args(exact_kwargs)
        if args_exact and kwargs_exact:
            return args, kwargs, True
    args, args_exact = decode(args_repr)
    kwargs, kwargs_exact = decode(kwargs_repr)
    return args, kwargs, args_exact and kwargs_exact


def stock_repr(value: Any) -> str:
    """The repr Celery puts into ``argsrepr`` for ``value`` (its defaults)."""
    return saferepr(value, REPR_MAX_CHARS, maxlevels=REPR_MAX_LEVELS)


def stock_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with exact ``args``/``kwargs`` text (an earlier version's
    publisher, or a retry an uninstrumented monitor published) moved to the
    exact fields, and the reprs Celery would have made in their place.

    JSON has no tuples: a tuple published that way reads back, and is shown,
    as a list."""
    stocked = dict(event)
    for repr_field, exact_field in (("args", EXACT_ARGS_FIELD), ("kwargs", EXACT_KWARGS_FIELD)):
        text = event.get(repr_field)
        if not is_exact_text(text):
            continue
        value, exact = decode_args(text)
        if exact:
            stocked[repr_field] = stock_repr(value)
            stocked.setdefault(exact_field, text)
    return stocked


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
