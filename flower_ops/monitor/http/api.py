"""The read routes of ``/api/automation/monitoring``: parse, call one service,
write. Each handler gets only the service it answers from."""
from __future__ import annotations

from typing import Any

from flower_ops.core.query import TaskPage
from flower_ops.monitor.auth import RequestAuth, TokenAuthority
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart, JsonHandler
from flower_ops.monitor.http.params import (
    TASK_QUERY_PARAMETERS,
    check_task_id,
    parse_task_query,
)
from flower_ops.monitor.http.token import TokenHandler, TokenPolicy
from flower_ops.monitor.services.queues import QueueService
from flower_ops.monitor.services.stats import StatsService
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.services.workers import WorkerService


def _page(page: TaskPage) -> dict[str, Any]:
    body = {"tasks": page.tasks, "total": page.total, "next": page.next, "prev": page.prev,
            "source": page.source}
    body.update(page.extra)
    return body


class StatsHandler(ApiHandler):
    def initialize(self, *, auth: RequestAuth, stats: StatsService) -> None:  # type: ignore[override]
        super().initialize(auth=auth)
        self.stats = stats

    def get(self) -> None:
        self.write_json(self.stats.stats())


class TasksHandler(ApiHandler):
    query_parameters = TASK_QUERY_PARAMETERS
    def initialize(self, *, auth: RequestAuth, tasks: TaskQueryService) -> None:  # type: ignore[override]
        super().initialize(auth=auth)
        self.tasks = tasks

    async def get(self) -> None:
        query = parse_task_query(self.query)
        self.write_json(_page(await self.tasks.list(query)))


class TaskCountsHandler(TasksHandler):
    """``GET /tasks/counts``: tasks per state for the ``GET /tasks`` filters
    (``state`` is validated and left aside: every state is counted)."""

    async def get(self) -> None:
        self.write_json(await self.tasks.counts(parse_task_query(self.query)))


class TaskHandler(TasksHandler):
    query_parameters = frozenset()
    async def get(self, task_id: str) -> None:  # type: ignore[override]
        self.write_json(await self.tasks.get(check_task_id(task_id)))


class WorkersHandler(ApiHandler):
    def initialize(self, *, auth: RequestAuth, workers: WorkerService) -> None:  # type: ignore[override]
        super().initialize(auth=auth)
        self.workers = workers

    def get(self) -> None:
        self.write_json(self.workers.list())


class QueuesHandler(ApiHandler):
    def initialize(self, *, auth: RequestAuth, queues: QueueService) -> None:  # type: ignore[override]
        super().initialize(auth=auth)
        self.queues = queues

    def get(self) -> None:
        self.write_json(self.queues.list())


class OpenApiHandler(JsonHandler):
    """The API description is public: it holds no data, and clients need it
    before they have a token."""

    def initialize(self, *, document: dict[str, Any]) -> None:  # type: ignore[override]
        super().initialize()
        self.document = document

    def get(self) -> None:
        self.write_json(self.document)


class IndexHandler(JsonHandler):
    """``GET /api/automation/monitoring``: what is here. Public, like the
    OpenAPI document it points to: it holds no data."""

    def initialize(self, *, index: dict[str, Any]) -> None:  # type: ignore[override]
        super().initialize()
        self.index = index

    def get(self) -> None:
        self.write_json(self.index)


def api_index(document: dict[str, Any], *, version: str) -> dict[str, Any]:
    """The index: the version, and a link per operation of ``document``."""
    base = document["servers"][0]["url"]
    links: dict[str, dict[str, str]] = {}
    for path, operations in sorted(document["paths"].items()):
        for method, operation in operations.items():
            name = operation.get("operationId") or f"{method}{path}"
            links[name] = {"href": f"{base}{path}", "method": method.upper(),
                           "summary": operation.get("summary", "")}
    return {"name": document["info"]["title"], "version": version,
            "api_version": document["info"]["version"],
            "openapi": f"{base}/openapi.json", "links": links}


def part(*, auth: RequestAuth, authority: TokenAuthority, policy: TokenPolicy,
         flower_options: Any, stats: StatsService, tasks: TaskQueryService, workers: WorkerService,
         queues: QueueService) -> HttpPart:
    """The read API and ``POST /token`` (their OpenAPI paths are the base
    document's, ``openapi.BASE``)."""
    return HttpPart(routes=[
        (f"{API_BASE}/stats/?", StatsHandler, {"auth": auth, "stats": stats}),
        (f"{API_BASE}/tasks/?", TasksHandler, {"auth": auth, "tasks": tasks}),
        # before /tasks/{id}, which "counts" would match
        (f"{API_BASE}/tasks/counts/?", TaskCountsHandler, {"auth": auth, "tasks": tasks}),
        (f"{API_BASE}/tasks/([^/]+)/?", TaskHandler, {"auth": auth, "tasks": tasks}),
        (f"{API_BASE}/workers/?", WorkersHandler, {"auth": auth, "workers": workers}),
        (f"{API_BASE}/queues/?", QueuesHandler, {"auth": auth, "queues": queues}),
        (f"{API_BASE}/token/?", TokenHandler,
         {"authority": authority, "policy": policy, "flower_options": flower_options}),
    ])
