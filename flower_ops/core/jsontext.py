"""The API's JSON text: one encoder for every answer, and ``JsonText``, an
answer already encoded (a service may keep one and hand it out again).

``orjson`` encodes (a tree of a thousand tasks, ~600 KB, in a few ms rather
than the stdlib's ten and more); what it refuses (an integer beyond 64 bits,
a key that is not a string or a number...) goes to the stdlib's encoder,
with ``str`` for what neither knows. NaN and infinities are null.
"""
from __future__ import annotations

import json
from typing import Any

import orjson

# datetimes and dataclasses go to ``default=str`` as they did with the stdlib
_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS)


class JsonText(str):
    """JSON text the handler writes as it is."""


def encode(value: Any) -> str:
    """JSON text of ``value``; raises ``ValueError`` on NaN or an infinity
    only on the stdlib's path (see ``encode_answer``)."""
    try:
        text = orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except (TypeError, ValueError, orjson.JSONEncodeError):
        # Task data may hold anything; never fail a response over one value.
        text = json.dumps(value, default=str, allow_nan=False)
    # "</" is escaped so JSON embedded in a page can never close a script tag
    return text.replace("</", "<\\/")


def encode_answer(value: Any) -> str:
    """``encode``, with NaN and infinities as null rather than a failure."""
    try:
        return encode(value)
    except ValueError:
        return encode(finite(value))


def finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
