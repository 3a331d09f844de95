"""The API's JSON text: one encoder for every answer, and ``JsonText``, an
answer already encoded (a service may keep one and hand it out again)."""
from __future__ import annotations

import json
from typing import Any


class JsonText(str):
    """JSON text the handler writes as it is."""


def encode(value: Any) -> str:
    # Task data may hold anything; never fail a response over one value.
    # "</" is escaped so JSON embedded in a page can never close a script tag.
    return json.dumps(value, default=str, allow_nan=False).replace("</", "<\\/")


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
