"""HTTP for cancel and retry: parse, call ``TaskActionService``, write JSON."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.lifecycle import TASK_STATES
from flower_ops.core.outcomes import REQUESTED
from flower_ops.core.query import TaskQuery
from flower_ops.monitor.auth import RequestAuth
from flower_ops.monitor.http.actions_openapi import openapi_paths
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart
from flower_ops.monitor.http.idempotent import IdempotentPost
from flower_ops.monitor.http.params import (
    check_task_id,
    parse_choice,
    parse_int,
    parse_task_query,
)
from flower_ops.monitor.services.actions import TaskActionService
from flower_ops.monitor.services.idempotency import IdempotencyService
from flower_ops.monitor.services.tasks import TaskQueryService
from flower_ops.monitor.services.workflow_actions import WorkflowActions

BODY_KEYS = frozenset({"ids", "filters", "dry_run", "force", "limit"})
FILTER_KEYS = frozenset({"state", "name", "worker", "queue", "search", "since", "until",
                         "source", "order", "cursor"})


@dataclass(frozen=True)
class BulkRequest:
    ids: list[str] | None
    query: TaskQuery | None
    limit: int
    dry_run: bool
    force: bool


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidQuery(f"{name} must be true or false", {"field": name})
    return value


def _filter_value(name: str, value: Any) -> str | None:
    """A ``filters`` value as the ``GET /tasks`` parameter it stands for.

    Strings everywhere; also numbers for ``since``/``until`` (epoch seconds)
    and a list of states for ``state``; null is the same as absent.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if name in ("since", "until") and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return str(value)
    if name == "state" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = sorted(set(value) - set(TASK_STATES))
        if unknown:
            raise InvalidQuery("unknown state", {"field": "filters.state", "unknown": unknown,
                                                 "allowed": list(TASK_STATES)})
        return ",".join(value)
    expected = {"since": "a string or a number", "until": "a string or a number",
                "state": "a string or a list of strings"}.get(name, "a string")
    raise InvalidQuery(f"filters.{name} must be {expected}", {"field": f"filters.{name}"})


def parse_bulk_request(body: dict[str, Any], *, max_tasks: int) -> BulkRequest:
    if "filter" in body:
        # one name for the filter object, as the feed's subscribe message has it
        raise InvalidQuery('"filter" is called "filters"', {"field": "filter",
                                                             "use": "filters"})
    unknown = sorted(set(body) - BODY_KEYS)
    if unknown:
        raise InvalidQuery("unknown field(s)", {"unknown": unknown, "allowed": sorted(BODY_KEYS)})
    if ("ids" in body) == ("filters" in body):
        raise InvalidQuery('give exactly one of "ids" or "filters"')
    limit = body.get("limit", max_tasks)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_tasks:
        raise InvalidQuery(f"limit must be an integer between 1 and {max_tasks}",
                           {"field": "limit", "max_tasks": max_tasks})
    dry_run, force = _bool(body, "dry_run"), _bool(body, "force")
    if "ids" in body:
        ids = body["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidQuery("ids must be a list of task ids", {"field": "ids"})
        if not ids:
            raise InvalidQuery("ids is empty", {"field": "ids"})
        if len(ids) > max_tasks:
            raise InvalidQuery(f"at most {max_tasks} tasks per call",
                               {"field": "ids", "max_tasks": max_tasks, "given": len(ids)})
        return BulkRequest(ids=[check_task_id(i) for i in ids], query=None, limit=limit,
                           dry_run=dry_run, force=force)
    raw = body["filters"]
    if not isinstance(raw, dict):
        raise InvalidQuery("filters must be an object with GET /tasks parameters",
                           {"field": "filters"})
    unknown = sorted(set(raw) - FILTER_KEYS)
    if unknown:
        raise InvalidQuery("unknown filter key(s)",
                           {"unknown": unknown, "allowed": sorted(FILTER_KEYS)})
    values = {name: _filter_value(name, value) for name, value in raw.items()}
    query = parse_task_query(values.get)
    return BulkRequest(ids=None, query=query, limit=limit, dry_run=dry_run, force=force)


class ActionHandler(IdempotentPost):
    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   actions: TaskActionService, idempotency: IdempotencyService) -> None:
        super().initialize(auth=auth)
        self.actions = actions
        self.idempotency = idempotency


class CancelHandler(ActionHandler):
    async def act(self, *args: str) -> tuple[int, Any]:
        task_id = check_task_id(args[0])
        result = await self.actions.cancel(task_id, subject=self.principal.subject)
        # 202: the revoke went out, a running task was signalled, its end is not known yet
        return (202 if result["outcome"] == REQUESTED else 200), result


class RetryHandler(ActionHandler):
    """A failed workflow step is resumed (``WorkflowActions.retry_task``)."""

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   actions: TaskActionService, idempotency: IdempotencyService,
                   workflows: WorkflowActions) -> None:
        super().initialize(auth=auth, actions=actions, idempotency=idempotency)
        self.workflows = workflows

    async def act(self, *args: str) -> tuple[int, Any]:
        task_id = check_task_id(args[0])
        body = self.json_body()
        unknown = sorted(set(body) - {"force"})
        if unknown:
            raise InvalidQuery("unknown field(s)", {"unknown": unknown, "allowed": ["force"]})
        return 200, await self.workflows.retry_task(
            task_id, subject=self.principal.subject, force=_bool(body, "force"))


class BulkActionHandler(ActionHandler):
    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   actions: TaskActionService, idempotency: IdempotencyService,
                   tasks: TaskQueryService) -> None:
        super().initialize(auth=auth, actions=actions, idempotency=idempotency)
        self.tasks = tasks

    async def act(self, *args: str) -> tuple[int, Any]:
        action = args[0]
        request = parse_bulk_request(self.json_body(), max_tasks=self.actions.max_tasks)
        cursor = None
        ids = request.ids
        if ids is None:
            assert request.query is not None  # parse_bulk_request sets one of the two
            ids, cursor = await self.actions.select(action, request.query,
                                                    list_tasks=self.tasks.list,
                                                    limit=request.limit)
        else:
            ids = ids[:request.limit]
        report = await self.actions.run(action, ids, subject=self.principal.subject,
                                        dry_run=request.dry_run, force=request.force)
        report.update(next=cursor, max_tasks=self.actions.max_tasks)
        return 200, report


class AuditHandler(ApiHandler):
    """``GET /audit``: who did what to which task, newest first (read scope)."""

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   actions: TaskActionService) -> None:
        super().initialize(auth=auth)
        self.actions = actions

    query_parameters = frozenset({"task_id", "subject", "action", "limit", "cursor"})

    async def get(self) -> None:
        def text(name: str) -> str | None:
            value = self.query(name)
            if value is not None and (len(value) > 256 or "\x00" in value):
                raise InvalidQuery(f"invalid {name}", {"parameter": name})
            return value or None

        limit = parse_int(self.query("limit"), "limit", 100,
                          minimum=1, maximum=1000)
        cursor = self.query("cursor")
        before_id = parse_int(cursor, "cursor", 0, minimum=1, maximum=2**62) \
            if cursor else None
        action = parse_choice(self.query("action"), "action",
                              ("cancel", "retry"))
        self.write_json(await self.actions.audit_log(
            task_id=text("task_id"), subject=text("subject"), action=action,
            before_id=before_id, limit=limit))


def part(*, auth: RequestAuth, actions: TaskActionService, tasks: TaskQueryService,
         workflows: WorkflowActions, idempotency: IdempotencyService) -> HttpPart:
    """Cancel, retry (one task or many) and the audit log."""
    kwargs = {"auth": auth, "actions": actions, "idempotency": idempotency}
    return HttpPart(
        # The bulk route first: "bulk" would otherwise match the task id group.
        routes=[
            (f"{API_BASE}/tasks/bulk/(cancel|retry)/?", BulkActionHandler,
             {**kwargs, "tasks": tasks}),
            (f"{API_BASE}/tasks/([^/]+)/cancel/?", CancelHandler, kwargs),
            (f"{API_BASE}/tasks/([^/]+)/retry/?", RetryHandler,
             {**kwargs, "workflows": workflows}),
            (f"{API_BASE}/audit/?", AuditHandler, {"auth": auth, "actions": actions}),
        ],
        openapi_paths=openapi_paths(max_tasks=actions.max_tasks))
