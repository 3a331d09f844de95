"""``flower_ops.core.times``: the one place instants and durations are
converted at the edges (ISO 8601 UTC with milliseconds; seconds rounded to
the millisecond; ISO input without an offset is UTC)."""
from __future__ import annotations

import math
import os
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from flower_ops.core.times import (
    ISO_PATTERN,
    iso,
    iso_datetime,
    iso_utc,
    now_iso,
    parse_instant,
    parse_time_value,
    seconds,
    with_times,
)

T = 1_796_043_248.123   # 2026-11-30T12:54:08.123Z


def test_iso_utc_has_exactly_milliseconds_and_z() -> None:
    assert iso_utc(T) == "2026-11-30T12:54:08.123Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_796_043_248) == "2026-11-30T12:54:08.000Z"
    assert iso_utc(1_796_043_248.9999) == "2026-11-30T12:54:08.999Z"   # truncated, never .1000
    assert iso_utc(1_796_043_248.0004) == "2026-11-30T12:54:08.000Z"
    for value in (T, 0.0, 1e9 + 0.5, time.time()):
        assert re.fullmatch(ISO_PATTERN, iso_utc(value) or ""), value


def test_iso_utc_of_nothing_or_nonsense_is_null() -> None:
    for value in (None, math.nan, math.inf, -math.inf, -1.0, 1e12, True):
        assert iso_utc(value) is None, value  # type: ignore[arg-type]


def test_an_instant_read_back_includes_itself() -> None:
    """A time shown (truncated to the millisecond) used as ``since`` still
    includes the instant it was shown for."""
    for value in (T, T + 0.0004, T + 0.0009, 1_700_000_000.1, 1_700_000_000.55):
        assert parse_instant(iso_utc(value) or "") <= value
        assert value - parse_instant(iso_utc(value) or "") < 0.001


def test_datetimes_and_strings_become_the_same_iso() -> None:
    aware = datetime(2026, 11, 30, 13, 54, 8, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert iso_datetime(aware) == "2026-11-30T12:54:08.123Z"
    assert iso_datetime(datetime(2026, 11, 30, 12, 54, 8, 123999)) == "2026-11-30T12:54:08.123Z"
    assert iso_datetime(None) is None
    assert iso(aware) == iso(T) == iso("2026-11-30T12:54:08.123456+00:00") \
        == iso("2026-11-30T07:54:08.123-05:00") == "2026-11-30T12:54:08.123Z"
    assert iso("not a time") is None and iso(None) is None and iso(object()) is None


def test_seconds_round_to_the_millisecond() -> None:
    assert seconds(0.3302705899999978) == 0.33
    assert seconds(1.23456) == 1.235
    assert seconds(2) == 2.0
    assert seconds(None) is None and seconds(math.nan) is None and seconds(math.inf) is None


@pytest.mark.parametrize("text", [
    "2026-11-30T12:54:08.123Z", "2026-11-30T12:54:08.123z", "2026-11-30T12:54:08.123+00:00",
    "2026-11-30T12:54:08.123", "2026-11-30 12:54:08.123", "2026-11-30T13:54:08.123+01:00",
    "2026-11-30T07:54:08.123-05:00",
])
def test_parse_instant_reads_naive_as_utc_and_converts_offsets(text: str) -> None:
    assert parse_instant(text) == pytest.approx(T, abs=1e-6)


def test_parse_instant_is_utc_whatever_the_process_time_zone() -> None:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        assert time.timezone != 0   # the zone really is not UTC here
        assert parse_instant("2026-11-30T12:54:08.123") == pytest.approx(T, abs=1e-6)
        assert iso_utc(T) == "2026-11-30T12:54:08.123Z"
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_parse_instant_reads_a_date_as_its_utc_midnight() -> None:
    assert parse_instant("2026-11-30") == datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("text", ["", "garbage", "yesterday", "2026-13-01", "12:54",
                                  "2026-11-30T25:00:00", "1969-12-31T23:59:59Z",
                                  "x" * 100])
def test_parse_instant_refuses_what_is_not_an_instant(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_time_values_take_epoch_seconds_too() -> None:
    assert parse_time_value("1796043248.123") == T
    assert parse_time_value("2026-11-30T12:54:08.123Z") == pytest.approx(T, abs=1e-6)
    for bad in ("nan", "inf", "-5", "1e12", "soon"):
        with pytest.raises(ValueError):
            parse_time_value(bad)


def test_with_times_converts_only_the_named_keys() -> None:
    record = {"at": T, "took": 0.1234567, "other": 5.55555, "none": None}
    out = with_times(record, instants=("at", "none", "absent"), durations=("took",))
    assert out == {"at": "2026-11-30T12:54:08.123Z", "took": 0.123, "other": 5.55555,
                   "none": None}
    assert record["at"] == T   # the record itself keeps its floats


def test_now_is_iso() -> None:
    assert re.fullmatch(ISO_PATTERN, now_iso())
    assert abs(parse_instant(now_iso()) - time.time()) < 5


def test_the_monitor_undoes_celerys_timestamp_localizing() -> None:
    """Celery's EventReceiver shifts ``timestamp`` by the sender's UTC offset
    minus the receiver's (celery/celery#2482); the monitor undoes it."""
    from celery.utils.time import adjust_timestamp

    from flower_ops.monitor.sources.flower_state import epoch_timestamp

    for offset in (0, -5, 5.5, 9):
        received = {"type": "task-started", "uuid": "a", "utcoffset": offset,
                    "timestamp": adjust_timestamp(T, offset), "local_received": T + 0.01}
        assert epoch_timestamp(received)["timestamp"] == pytest.approx(T, abs=1e-6)
    assert epoch_timestamp({"timestamp": T}) == {"timestamp": T}
