"""Parsing and validating query parameters into our value types."""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from ..errors import InvalidQuery
from ..models import TASK_STATES, TaskQuery

MAX_LIMIT = 1000
MAX_TEXT = 256
TASK_ID_MAX = 255


def _text(get: Callable[[str], str | None], name: str) -> str | None:
    value = get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        raise InvalidQuery(f"{name} is longer than {MAX_TEXT} characters", {"parameter": name})
    if "\x00" in value:
        raise InvalidQuery(f"{name} contains a NUL character", {"parameter": name})
    return value


def parse_time(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidQuery(f"{name} must be epoch seconds or an ISO 8601 time",
                               {"parameter": name, "value": value[:64]}) from None
        return parsed.timestamp()
    if number != number or not (0 <= number < 1e11):
        raise InvalidQuery(f"{name} is out of range", {"parameter": name})
    return number


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
    raw_limit = get("limit")
    limit = 50
    if raw_limit not in (None, ""):
        try:
            limit = int(raw_limit)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidQuery("limit must be an integer", {"parameter": "limit"}) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}", {"parameter": "limit"})
    order = (get("order") or get("sort") or "desc").lower()
    if order in ("newest", "-time", "desc"):
        order = "desc"
    elif order in ("oldest", "time", "asc"):
        order = "asc"
    else:
        raise InvalidQuery("order must be desc or asc", {"parameter": "order"})
    source = (get("source") or "auto").lower()
    if source not in ("auto", "memory", "db"):
        raise InvalidQuery("source must be auto, memory or db", {"parameter": "source"})
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
