"""Times at the edges: the one place instants and durations are converted.

Inside, every instant is a float of epoch seconds and every duration a float
of seconds (computation, storage, indexes). What leaves the product (the
REST API, the live feed, alert payloads and webhooks, the audit as served)
says an instant as ISO 8601 in UTC with milliseconds,
``2026-11-30T12:54:08.123Z``, and a duration as seconds rounded to the
millisecond. What comes in (``since``/``until``...) is ISO 8601: one
without an offset is UTC, whatever the server's time zone; epoch seconds
are still read where they were before.

No Flower, no Tornado, no PostgreSQL here.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

ISO_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
# Instants later than this are nonsense (year 5138); earlier than 0 too
MAX_EPOCH = 1e11


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds
    truncated, so an instant read back as ``since`` still includes itself);
    None, NaN, infinities and instants out of range stay None."""
    if epoch is None or isinstance(epoch, bool):
        return None
    try:
        micros = round(float(epoch) * 1_000_000)
    except (TypeError, ValueError, OverflowError):
        return None
    whole, millis = divmod(micros // 1000, 1000)
    if not 0 <= whole < MAX_EPOCH:
        return None
    return f"{_second_text(whole)}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _second_text(whole: int) -> str:
    # a task's times, and a burst of tasks, share their seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def iso_datetime(value: datetime | None) -> str | None:
    """A datetime (psycopg's ``timestamptz``) as ``iso_utc`` says it; a naive one is UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return iso_utc(value.timestamp())


def iso(value: Any) -> str | None:
    """Any instant we may hold (epoch seconds, a datetime, an ISO string as
    Celery sends ``eta`` and ``expires``) as ``iso_utc`` says it; None when
    it is not one."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return iso_utc(value)
    if isinstance(value, datetime):
        return iso_datetime(value)
    if isinstance(value, str):
        try:
            return iso_utc(parse_instant(value))
        except ValueError:
            return None
    return None


def seconds(duration: float | None) -> float | None:
    """A duration in seconds, rounded to the millisecond; None (and NaN,
    infinities, what is not a number) stays None."""
    if duration is None or isinstance(duration, bool):
        return None
    try:
        value = float(duration)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return round(value, 3)


def parse_instant(text: str) -> float:
    """ISO 8601 (``2026-11-30T12:54:08.123Z``, ``...+01:00``, ``2026-11-30``)
    as epoch seconds: without an offset it is UTC, with one it is converted.
    Raises ``ValueError`` for anything else."""
    value = text.strip()
    if not value or len(value) > 64:
        raise ValueError(f"not an ISO 8601 time: {text[:64]!r}")
    if value[-1] in "zZ":
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        epoch = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time out of range: {text[:64]!r}") from None
    if not 0 <= epoch < MAX_EPOCH:
        raise ValueError(f"time out of range: {text[:64]!r}")
    return epoch


def parse_time_value(text: str) -> float:
    """A time input: epoch seconds (a number, as accepted before) or ISO 8601
    (``parse_instant``). Raises ``ValueError`` for anything else."""
    try:
        number = float(text)
    except ValueError:
        return parse_instant(text)
    if not math.isfinite(number) or not 0 <= number < MAX_EPOCH:
        raise ValueError(f"time out of range: {text[:64]!r}")
    return number


def with_times(record: Mapping[str, Any], *, instants: Iterable[str] = (),
               durations: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of ``record`` with its ``instants`` keys as ISO strings and its
    ``durations`` keys as rounded seconds (keys it lacks stay absent)."""
    out = dict(record)
    for key in instants:
        if key in out:
            out[key] = iso(out[key])
    for key in durations:
        if key in out:
            out[key] = seconds(out[key])
    return out


def now_iso() -> str:
    """The current instant, as ``iso_utc`` says it."""
    return iso_utc(time.time()) or ""


def sender_timestamp(event: Mapping[str, Any], here_hours: float) -> float | None:
    """The ``timestamp`` a Celery event's sender stamped, in epoch seconds.

    Celery's ``EventReceiver`` "localizes" every event it reads, shifting its
    timestamp by the gap between the sender's UTC offset and the receiver's
    (``celery.utils.time.adjust_timestamp``, celery/celery#2482). Epoch
    seconds are the same in every zone, so a receiver whose ``TZ`` differs
    from its workers' would read every task hours off. This undoes that
    shift; ``here_hours`` is the receiver's ``celery.utils.time.utcoffset()``.
    None when the event has no usable timestamp and offset.
    """
    try:
        timestamp = float(event["timestamp"])
        offset = float(event["utcoffset"])
    except (KeyError, TypeError, ValueError):
        return None
    return timestamp + (offset - here_hours) * 3600


_OFFSET_TTL_SECONDS = 60.0
_offset_cache: list[float] = [-1.0, 0.0]     # [valid until (monotonic), hours]


def local_utcoffset_hours() -> float:
    """This process's UTC offset in hours as Celery counts it
    (``celery.utils.time.utcoffset``: hours *west* of UTC, DST included),
    recomputed at most once a minute: it is read for every event."""
    now = time.monotonic()
    if now >= _offset_cache[0]:
        zone = time.altzone if time.localtime().tm_isdst else time.timezone
        _offset_cache[1] = float(zone // 3600)
        _offset_cache[0] = now + _OFFSET_TTL_SECONDS
    return _offset_cache[1]
