"""``GET /series`` (per-minute series for the console's charts) and
``GET /task-names`` (the task-name table): ``services/insights.py``."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.monitor.auth import RequestAuth
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart
from flower_ops.monitor.http.openapi import errors, ok, query
from flower_ops.monitor.http.params import MAX_TEXT, parse_choice, parse_int, parse_time
from flower_ops.monitor.http.schemas import ref
from flower_ops.monitor.services.insights import SORTS, InsightsService

MAX_RANGE_SECONDS = 7 * 86400          # 10,080 one-minute points
SERIES_DEFAULT_SECONDS = 3600
NAMES_DEFAULT_SECONDS = 86400
MAX_LISTED = 50                        # names= / queues= entries
# names= / queues= in all: a URL must stay well under Tornado's 64 KB request
# line even with every character percent-encoded (up to 12 bytes each)
MAX_LISTED_TEXT = 2048
DEFAULT_LIMIT, MAX_LIMIT = 200, 1000
Get = Callable[[str], str | None]


def parse_window(get: Get, default_seconds: float) -> tuple[float, float]:
    """``since`` / ``until``: until defaults to now, since to ``default_seconds``
    before it; since before until, at most 7 days apart."""
    until = parse_time("until", get("until"))
    since = parse_time("since", get("since"))
    if until is None:
        until = time.time()
    if since is None:
        since = until - default_seconds
    if since >= until:
        raise InvalidQuery("since must be before until", {"parameter": "since"})
    if until - since > MAX_RANGE_SECONDS:
        raise InvalidQuery("since and until are more than 7 days (10,080 minutes) apart",
                           {"parameter": "since", "max_seconds": MAX_RANGE_SECONDS})
    return since, until


def parse_list(get: Get, name: str) -> list[str] | None:
    """A comma-separated list of names (at most 50, each up to 256 characters,
    2,048 in all)."""
    raw = get(name)
    if raw is None:
        return None
    if len(raw) > MAX_LISTED_TEXT:
        raise InvalidQuery(f"{name} is at most {MAX_LISTED_TEXT} characters",
                           {"parameter": name})
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items or len(items) > MAX_LISTED:
        raise InvalidQuery(f"{name} must list 1 to {MAX_LISTED} comma-separated names",
                           {"parameter": name})
    if any(len(item) > MAX_TEXT or "\x00" in item for item in items):
        raise InvalidQuery(f"{name}: each name is at most {MAX_TEXT} characters, no NUL",
                           {"parameter": name})
    return items


class SeriesHandler(ApiHandler):
    query_parameters = frozenset({"since", "until", "names", "queues"})

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   insights: InsightsService) -> None:
        super().initialize(auth=auth)
        self.insights = insights

    async def get(self) -> None:
        since, until = parse_window(self.query, SERIES_DEFAULT_SECONDS)
        names, queues = parse_list(self.query, "names"), parse_list(self.query, "queues")
        self.write_json(await self.insights.series(since, until, names, queues))


class TaskNamesHandler(ApiHandler):
    query_parameters = frozenset({"since", "until", "sort", "limit"})

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   insights: InsightsService) -> None:
        super().initialize(auth=auth)
        self.insights = insights

    async def get(self) -> None:
        since, until = parse_window(self.query, NAMES_DEFAULT_SECONDS)
        sort = parse_choice(self.query("sort"), "sort", SORTS) or "runs"
        limit = parse_int(self.query("limit"), "limit", DEFAULT_LIMIT, minimum=1,
                          maximum=MAX_LIMIT)
        self.write_json(await self.insights.task_names(since, until, sort, limit))


_TIME = ("ISO 8601 (e.g. 2026-11-30T12:54:08.123Z; without an offset it is UTC) or epoch "
         "seconds")
_WINDOW_RULE = "; since before until, at most 7 days (10,080 minutes) apart"


def _window(default: str) -> list[dict[str, Any]]:
    return [query("since", {"type": "string"}, f"{_TIME} (inclusive); default: {default} "
                  f"before until{_WINDOW_RULE}"),
            query("until", {"type": "string"}, f"{_TIME} (exclusive); default: now")]


def openapi_paths() -> dict[str, Any]:
    listed = {"type": "string", "maxLength": MAX_LISTED_TEXT}
    return {
        "/series": {"get": {
            "summary": "Per-minute series: finished tasks, queue depths, runtimes per name",
            "operationId": "getSeries",
            "description": "The monitor keeps the last 24 h per minute in memory; minutes "
                           "before it started (or older than 24 h) come from PostgreSQL "
                           "when DATABASE_URL is set (queue depths are not stored there: "
                           "null).",
            "parameters": [
                *_window("60 minutes"),
                query("names", listed, "comma-separated task names (at most 50) whose "
                      "runtime series to give; default: the 50 that ran most"),
                query("queues", listed, "comma-separated queue names (at most 50); "
                      "default: every queue the monitor samples"),
            ],
            "responses": {**ok(ref("Series")), **errors(400, 401, 403, 503)}}},
        "/task-names": {"get": {
            "summary": "Per task name: runs, failure rate, runtime percentiles, last failure",
            "operationId": "listTaskNames",
            "description": "From memory when it holds the whole window, else from "
                           "PostgreSQL when DATABASE_URL is set.",
            "parameters": [
                *_window("24 hours"),
                query("sort", {"type": "string", "enum": list(SORTS), "default": "runs"},
                      "runs, failure_rate and p95 descending; name ascending"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                "default": DEFAULT_LIMIT}),
            ],
            "responses": {**ok(ref("TaskNameList")), **errors(400, 401, 403, 503)}}},
    }


def part(*, auth: RequestAuth, insights: InsightsService) -> HttpPart:
    kwargs = {"auth": auth, "insights": insights}
    return HttpPart(routes=[(f"{API_BASE}/series/?", SeriesHandler, kwargs),
                            (f"{API_BASE}/task-names/?", TaskNamesHandler, kwargs)],
                    openapi_paths=openapi_paths())
