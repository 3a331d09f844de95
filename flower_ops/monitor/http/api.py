"""REST routes of ``/api/automation/monitoring``: parse, call one service, write."""
from __future__ import annotations

from typing import Any

from flower_ops.monitor.http.params import check_task_id, parse_task_query
from flower_ops.monitor.http.base import ApiHandler, JsonHandler


def _page(page: Any) -> dict[str, Any]:
    body = {"tasks": page.tasks, "total": page.total, "next": page.next, "source": page.source}
    body.update(page.extra)
    return body


class StatsHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(self.ops.stats.stats())


class TasksHandler(ApiHandler):
    async def get(self) -> None:
        query = parse_task_query(self.query)
        page = await self.ops.tasks.list(query)
        self.write_json(_page(page))


class TaskHandler(ApiHandler):
    async def get(self, task_id: str) -> None:
        self.write_json(await self.ops.tasks.get(check_task_id(task_id)))


class WorkersHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(self.ops.workers.list())


class QueuesHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(self.ops.queues.list())


class OpenApiHandler(JsonHandler):
    """The API description is public: it holds no data, and clients need it
    before they have a token."""

    def get(self) -> None:
        self.write_json(self.ops.openapi_document())
