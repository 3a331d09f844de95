"""Parsing and validating query parameters into our value types."""
from __future__ import annotations

import re
from collections.abc import Callable

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.query import TaskQuery
from flower_ops.core.times import parse_time_value

MAX_LIMIT = 1000
# Flower's spellings of the two orders
ORDER_ALIASES = {"newest": "desc", "-time": "desc", "oldest": "asc", "time": "asc"}
MAX_TEXT = 256
TASK_ID_MAX = 255
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _text(get: Callable[[str], str | None], name: str) -> str | None:
    value = get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise InvalidQuery(f"{name} is longer than {MAX_TEXT} characters", {"parameter": name})
    if "\x00" in value:
        raise InvalidQuery(f"{name} contains a NUL character", {"parameter": name})
    return value


def parse_int(raw: str | None, name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query parameter; absent is ``default``, present must be digits.

    Present but empty (``?limit=``) is not "absent": it is not an integer.
    """
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise InvalidQuery(f"{name} must be an integer", {"parameter": name})
    value = int(raw)
    if not minimum <= value <= maximum:
        raise InvalidQuery(f"{name} must be between {minimum} and {maximum}",
                           {"parameter": name})
    return value


def parse_choice(raw: str | None, name: str, choices: tuple[str, ...],
                 aliases: dict[str, str] | None = None) -> str | None:
    """One of ``choices`` (case-insensitive), or None when absent."""
    if raw is None:
        return None
    value = raw.lower()
    value = (aliases or {}).get(value, value)
    if value not in choices:
        raise InvalidQuery(f"{name} must be one of {', '.join(choices)}",
                           {"parameter": name, "allowed": list(choices)})
    return value


def parse_time(name: str, value: str | None) -> float | None:
    """An instant: ISO 8601 (without an offset it is UTC) or epoch seconds
    (``core.times.parse_time_value``); absent or empty is None."""
    if value is None or value == "":
        return None
    try:
        return parse_time_value(value)
    except ValueError:
        raise InvalidQuery(f"{name} must be an ISO 8601 time (UTC without an offset, "
                           "e.g. 2026-11-30T12:54:08.123Z) or epoch seconds",
                           {"parameter": name, "value": value[:64]}) from None


# auto: memory, or the source of the cursor given
TASK_SOURCES = ("auto", "memory", "db", "all")
# what parse_task_query reads (``sort`` is an alias of ``order``); GET /tasks/counts
# reads the same and leaves state, limit, cursor and order aside
TASK_QUERY_PARAMETERS = frozenset({"state", "name", "worker", "queue", "search", "since",
                                   "until", "limit", "cursor", "order", "sort", "source"})


def parse_task_query(get: Callable[[str], str | None]) -> TaskQuery:
    states: frozenset[str] = frozenset()
    raw_state = _text(get, "state")
    if raw_state:
        requested = {s.strip().upper() for s in raw_state.split(",") if s.strip()}
        unknown = sorted(requested - set(TASK_STATES))
        if unknown:
            raise InvalidQuery("unknown state", {"parameter": "state", "unknown": unknown,
                                                 "allowed": list(TASK_STATES)})
        states = frozenset(requested)
    limit = parse_int(get("limit"), "limit", 50, minimum=1, maximum=MAX_LIMIT)
    raw_order = get("order")
    order = parse_choice(raw_order if raw_order is not None else get("sort"), "order",
                         ("desc", "asc"), ORDER_ALIASES) or "desc"
    source = parse_choice(get("source"), "source", TASK_SOURCES) or "auto"
    since = parse_time("since", get("since"))
    until = parse_time("until", get("until"))
    if since is not None and until is not None and since > until:
        raise InvalidQuery("since is after until", {"parameter": "since"})
    cursor = _text(get, "cursor")
    return TaskQuery(states=states, name=_text(get, "name"), worker=_text(get, "worker"),
                     queue=_text(get, "queue"), search=_text(get, "search"), since=since,
                     until=until, limit=limit, cursor=cursor, order=order, source=source)


def check_task_id(task_id: str) -> str:
    if not task_id or len(task_id) > TASK_ID_MAX or "\x00" in task_id:
        raise InvalidQuery("invalid task id", {"max_length": TASK_ID_MAX})
    return task_id
