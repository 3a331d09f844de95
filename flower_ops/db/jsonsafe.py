"""Values PostgreSQL can store: its ``jsonb`` and ``text`` refuse U+0000.

A task's arguments, result or error text may hold NUL characters (Python
strings can, and JSON spells them ``"\\u0000"``), but PostgreSQL rejects NUL
in ``text`` columns and anywhere inside ``jsonb``: one such value would fail
the whole write. The sync worker and the monitor therefore store NUL spelled
out, as the six characters ``\\u0000`` in JSON (``\\x00`` in text columns).

A stored copy that had to be changed is no longer exact, so writers clear
``args_exact`` for it: a retry then uses the exact payload from Flower's
memory or the result backend, or is refused (409), never sent with altered
arguments.
"""
from __future__ import annotations

import json
import re
from typing import Any

NUL = "\x00"
_ENCODED_NUL = "\\u0000"
# an escape sequence \u0000 (preceded by an even number of backslashes, so not
# the text "\\u0000" that a string holding a backslash encodes to)
_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def jsonb_text(text: str) -> tuple[str, bool]:
    """JSON ``text`` with every encoded NUL spelled out: (text, whether it changed)."""
    if _ENCODED_NUL not in text:
        return text, False
    fixed = _ESCAPED_NUL.sub(lambda match: match.group(1) + "\\\\u0000", text)
    return fixed, fixed != text


def jsonb_dumps(value: Any) -> str:
    """``json.dumps`` for a ``jsonb`` parameter (psycopg's ``Jsonb(value, dumps=...)``)."""
    return jsonb_text(json.dumps(value))[0]


def holds_nul(value: Any) -> bool:
    """Whether storing ``value`` as ``jsonb`` changes it."""
    try:
        return jsonb_text(json.dumps(value))[1]
    except (TypeError, ValueError):
        return False


def clean_text(text: str | None) -> str | None:
    """A value for a ``text`` column: NUL spelled ``\\x00``."""
    return text.replace(NUL, "\\x00") if isinstance(text, str) and NUL in text else text
