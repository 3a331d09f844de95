"""``/workflows``: the list, one workflow's tree, resume and cancel
(``services/workflows.py``, ``services/workflow_actions.py``)."""
from __future__ import annotations

from typing import Any

from flower_ops.core.errors import InvalidQuery
from flower_ops.monitor.auth import RequestAuth
from flower_ops.monitor.http import openapi
from flower_ops.monitor.http.base import API_BASE, ApiHandler, HttpPart
from flower_ops.monitor.http.idempotent import OPENAPI_PARAMETER, IdempotentPost
from flower_ops.monitor.http.params import (
    MAX_TEXT,
    TASK_ID_MAX,
    check_task_id,
    parse_choice,
    parse_int,
)
from flower_ops.monitor.http.schemas import ref
from flower_ops.monitor.services.idempotency import IdempotencyService
from flower_ops.monitor.services.workflow_actions import WorkflowActions
from flower_ops.monitor.services.workflow_cancel import WorkflowCancel
from flower_ops.monitor.services.workflows import SOURCES, WORKFLOW_STATES, WorkflowService

DEFAULT_LIMIT, MAX_LIMIT = 50, 200


class WorkflowListHandler(ApiHandler):
    query_parameters = frozenset({"state", "name", "limit", "cursor", "source"})

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   workflows: WorkflowService) -> None:
        super().initialize(auth=auth)
        self.workflows = workflows

    async def get(self) -> None:
        name = self.query("name")
        if name is not None and (not name or len(name) > MAX_TEXT or "\x00" in name):
            raise InvalidQuery(f"name is 1 to {MAX_TEXT} characters, no NUL",
                               {"parameter": "name"})
        cursor = self.query("cursor")
        if cursor is not None and len(cursor) > 2 * TASK_ID_MAX:
            raise InvalidQuery("invalid cursor", {"parameter": "cursor"})
        self.write_json(await self.workflows.listing(
            state=parse_choice(self.query("state"), "state", WORKFLOW_STATES),
            name=name,
            limit=parse_int(self.query("limit"), "limit", DEFAULT_LIMIT, minimum=1,
                            maximum=MAX_LIMIT),
            cursor=cursor,
            source=parse_choice(self.query("source"), "source", SOURCES) or "auto"))


class WorkflowHandler(ApiHandler):
    query_parameters = frozenset({"source"})

    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   workflows: WorkflowService) -> None:
        super().initialize(auth=auth)
        self.workflows = workflows

    async def get(self, root_id: str) -> None:
        source = parse_choice(self.query("source"), "source", SOURCES) or "auto"
        self.write_json(await self.workflows.get(check_task_id(root_id), source))


class WorkflowActionHandler(IdempotentPost):
    def initialize(self, *, auth: RequestAuth,  # type: ignore[override]
                   actions: WorkflowActions, idempotency: IdempotencyService) -> None:
        super().initialize(auth=auth)
        self.actions = actions
        self.idempotency = idempotency

    def dry_run(self) -> bool:
        body = self.json_body()
        unknown = sorted(set(body) - {"dry_run"})
        if unknown:
            raise InvalidQuery("unknown field(s)", {"unknown": unknown, "allowed": ["dry_run"]})
        value = body.get("dry_run", False)
        if not isinstance(value, bool):
            raise InvalidQuery("dry_run must be true or false", {"field": "dry_run"})
        return value

    async def act(self, *args: str) -> tuple[int, Any]:
        root_id, action = check_task_id(args[0]), args[1]
        dry_run = self.dry_run()
        subject = self.principal.subject
        if action == "retry":
            answer = await self.actions.retry(root_id, subject=subject, dry_run=dry_run)
        else:
            answer = await WorkflowCancel(self.actions).cancel(root_id, subject=subject,
                                                               dry_run=dry_run)
        return 200, answer


_ROOT_ID = {"name": "root_id", "in": "path", "required": True,
            "schema": {"type": "string", "maxLength": TASK_ID_MAX},
            "description": "the workflow's id (its root task's, or a group's for a group or "
                           "chord sent on its own); any of its tasks' ids is taken too"}
_SOURCE = openapi.query("source", {"type": "string", "enum": list(SOURCES),
                                   "default": "auto"},
                        "auto: PostgreSQL's rows with memory laid over them (memory alone "
                        "without a database); memory; db")
_DRY_RUN_BODY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {"dry_run": {"type": "boolean", "default": False,
                               "description": "say what would be done; do nothing"}}}}}}


def openapi_paths() -> dict[str, Any]:
    return {
        "/workflows": {"get": {
            "summary": "Workflows (chains, groups, chords...), newest first",
            "operationId": "listWorkflows",
            "parameters": [
                openapi.query("state", {"type": "string", "enum": list(WORKFLOW_STATES)}),
                openapi.query("name", {"type": "string", "maxLength": MAX_TEXT},
                              "the root task's name; a trailing * matches a prefix"),
                openapi.query("limit", {"type": "integer", "minimum": 1,
                                        "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
                openapi.query("cursor", {"type": "string"}, "next of the previous page"),
                _SOURCE],
            "responses": {**openapi.ok(ref("WorkflowList")),
                          **openapi.errors(400, 401, 403, 503)}}},
        "/workflows/{root_id}": {"get": {
            "summary": "One workflow as a tree: nodes, edges, groups, its state and counts",
            "operationId": "getWorkflow",
            "parameters": [_ROOT_ID, _SOURCE],
            "responses": {**openapi.ok(ref("Workflow")),
                          **openapi.errors(400, 401, 403, 404, 503)}}},
        "/workflows/{root_id}/retry": {"post": {
            "summary": "Resume a workflow: send every failed step again with what followed it",
            "operationId": "retryWorkflow",
            "description": "A chain step with its continuation, a chord's failed members "
                           "(then the body once, with every member's result), a group's "
                           "members, other steps alone. 409 when nothing failed or when "
                           "Celery cannot resume a step safely (detail.reasons says why, "
                           "per step); then nothing is sent. Each resumed step is audited.",
            "parameters": [_ROOT_ID, OPENAPI_PARAMETER], "requestBody": _DRY_RUN_BODY,
            "responses": {**openapi.ok(ref("WorkflowRetryAnswer"), "Resumed (or would be)"),
                          **openapi.errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
        "/workflows/{root_id}/cancel": {"post": {
            "summary": "Cancel every step of a workflow that has not ended",
            "operationId": "cancelWorkflow",
            "description": "Published steps are cancelled as POST /tasks/bulk/cancel does "
                           "(each answered with what happened); steps not published yet "
                           "have their ids revoked before they are sent, so they never run. "
                           "409 when every step has ended.",
            "parameters": [_ROOT_ID, OPENAPI_PARAMETER], "requestBody": _DRY_RUN_BODY,
            "responses": {**openapi.ok(ref("WorkflowCancelAnswer"), "What was done to each "
                                       "step (or, dry run, would be)"),
                          **openapi.errors(400, 401, 403, 404, 409, 413, 422, 503)}}},
    }


def part(*, auth: RequestAuth, workflows: WorkflowService, actions: WorkflowActions,
         idempotency: IdempotencyService) -> HttpPart:
    read = {"auth": auth, "workflows": workflows}
    return HttpPart(routes=[
        (f"{API_BASE}/workflows/?", WorkflowListHandler, read),
        (f"{API_BASE}/workflows/([^/]+)/(retry|cancel)/?", WorkflowActionHandler,
         {"auth": auth, "actions": actions, "idempotency": idempotency}),
        (f"{API_BASE}/workflows/([^/]+)/?", WorkflowHandler, read),
    ], openapi_paths=openapi_paths())
