"""Workflows (Celery's canvas) as one tree: ``GET /workflows`` and
``GET /workflows/{root_id}``.

Memory: ``WorkflowIndex`` follows the task index's changes and keeps each
workflow's task ids (``core/canvas.py`` says which workflow a task is in).
PostgreSQL: ``db/workflows.py``. With both, a workflow's records are
PostgreSQL's rows with memory laid over them, as for a task's detail
(memory is newer, except that a final state the database holds wins over an
open one memory still shows: the monitor missed the end), so a workflow
finished before a restart is still there and a running one is current. The
tree itself is ``core/workflow.py``'s, for every source.
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from flower_ops.core.canvas import signature_id, task_canvas, task_workflow
from flower_ops.core.errors import InvalidQuery, NotFound
from flower_ops.core.jsontext import JsonText, encode_answer
from flower_ops.core.lifecycle import FINAL_STATES, TIMESTAMP_FIELDS, api_state, outcome_times
from flower_ops.core.query import name_matches
from flower_ops.core.times import iso, seconds
from flower_ops.core.workflow import build_tree
from flower_ops.db.workflows import PgWorkflows
from flower_ops.monitor.sources.flower_state import task_queue, task_worker
from flower_ops.monitor.sources.task_index import TaskIndex

WORKFLOW_STATES = ("running", "succeeded", "failed", "cancelled")
SOURCES = ("auto", "memory", "db")
MAX_SCAN_ROUNDS = 20
KEPT_ANSWERS = 32       # encoded trees kept (the ones looked at last)


class WorkflowIndex:
    """Workflow id → its task ids in Flower's memory; task id → workflow."""

    def __init__(self, index: TaskIndex) -> None:
        self.index = index
        self.members: dict[str, set[str]] = {}
        self.started: dict[str, float] = {}
        self._of: dict[str, str] = {}
        # steps not sent yet, known from the links of the tasks before them
        self._planned: dict[str, str] = {}
        self._planned_by: dict[str, set[str]] = {}
        # a workflow's change count (answers kept are valid while it stands)
        # and its tasks' records, read again only when a task changed
        self.version: dict[str, int] = {}
        self._records: dict[str, dict[str, Any]] = {}
        # the composition root makes ``changed`` a change listener of the index
        self.changed(set(index.state.tasks.data.keys()))

    def changed(self, ids: set[str]) -> None:
        tasks = self.index.state.tasks.data
        for task_id in ids:
            task = tasks.get(task_id)
            workflow = task_workflow(task) if task is not None else None
            old = self._of.get(task_id)
            self._records.pop(task_id, None)
            # its workflow(s) changed; so did the one named after it (a root
            # task that carries no workflow field of its own is one)
            for changed in {old, workflow, task_id if task_id in self.members else None}:
                if changed is not None:
                    self.version[changed] = self.version.get(changed, 0) + 1
            if old == workflow:
                continue
            if old is not None:
                self._leave(old, task_id)
            if workflow is not None:
                self._of[task_id] = workflow
                for planned in _planned_ids(task):
                    if self._planned.setdefault(planned, workflow) == workflow:
                        self._planned_by.setdefault(workflow, set()).add(planned)
                self.members.setdefault(workflow, set()).add(task_id)
                first = _first_time(task)
                if first is not None and first < self.started.get(workflow, float("inf")):
                    self.started[workflow] = first

    def _leave(self, workflow: str, task_id: str) -> None:
        self._of.pop(task_id, None)
        members = self.members.get(workflow)
        if members is not None:
            members.discard(task_id)
            if not members:
                del self.members[workflow]
                self.started.pop(workflow, None)
                self.version.pop(workflow, None)
                for planned in self._planned_by.pop(workflow, ()):
                    self._planned.pop(planned, None)

    def workflow_of(self, task_id: str) -> str | None:
        return self._of.get(task_id) or self._planned.get(task_id)

    def records(self, workflow_id: str) -> list[dict[str, Any]]:
        ids = set(self.members.get(workflow_id, ()))
        ids.add(workflow_id)
        tasks = self.index.state.tasks.data
        records = self._records
        out = []
        for task_id in ids:
            record = records.get(task_id)
            if record is None:
                task = tasks.get(task_id)
                if task is None:
                    continue
                record = records[task_id] = memory_record(task)
            out.append(record)
        return out


def _planned_ids(task: Any) -> list[str]:
    canvas = task_canvas(task) or {}
    signatures = [*(canvas.get("chain") or ()), canvas.get("chord")]
    return [i for i in map(signature_id, signatures) if i]


def _first_time(task: Any) -> float | None:
    times = [t for t in (getattr(task, f, None) for f in TIMESTAMP_FIELDS) if t]
    return min(times) if times else getattr(task, "timestamp", None)


def memory_record(task: Any) -> dict[str, Any]:
    state = api_state(task.state)
    times = {f: getattr(task, f, None) for f in TIMESTAMP_FIELDS}
    if task.state == "REJECTED":
        times["failed"] = times.get("failed") or getattr(task, "rejected", None)
    return {
        "id": task.uuid, "name": task.name, "state": state, "worker": task_worker(task),
        "queue": task_queue(task), "retries": getattr(task, "retries", None),
        "runtime": getattr(task, "runtime", None),
        "exception": getattr(task, "exception", None),
        "parent_id": getattr(task, "parent_id", None), "root_id": getattr(task, "root_id", None),
        "retry_of": None, "retried_as": None, "workflow_id": task_workflow(task),
        "canvas": task_canvas(task), **outcome_times(state, times),
    }


def merge_records(stored: list[dict[str, Any]], memory: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """PostgreSQL's rows with memory laid over them (see the module's doc)."""
    merged = {r["id"]: r for r in stored}
    for record in memory:
        row = merged.get(record["id"])
        if row is None:
            merged[record["id"]] = record
            continue
        keep_stored = row["state"] in FINAL_STATES and record["state"] not in FINAL_STATES
        combined = dict(row) if keep_stored else {
            **record, **{k: row[k] for k in ("retry_of", "retried_as") if row.get(k)}}
        combined["canvas"] = record.get("canvas") or row.get("canvas")
        merged[record["id"]] = combined
    return list(merged.values())


# A task's instants do not change once set: a tree looked at again (a running
# workflow, refreshed) formats most of them from here
_iso = lru_cache(maxsize=32_768)(iso)


def present_tree(tree: dict[str, Any], source: str) -> dict[str, Any]:
    """Instants ISO 8601, durations rounded, as every answer has them."""
    out = dict(tree)
    out["started"], out["finished"] = iso(tree["started"]), iso(tree["finished"])
    nodes = []
    for raw in tree["nodes"]:
        node = dict(raw)
        node["sent"], node["started"], node["finished"] = (
            _iso(raw["sent"]), _iso(raw["started"]), _iso(raw["finished"]))
        node["runtime"] = seconds(raw["runtime"])
        nodes.append(node)
    out["nodes"] = nodes
    out["source"] = source
    return out


def summary_of(tree: dict[str, Any]) -> dict[str, Any]:
    root = tree["nodes"][0] if tree["nodes"] else {}
    return {k: tree[k] for k in ("root_id", "kind", "state", "failed_at", "counts",
                                 "started", "finished", "source")} | {
        "name": root.get("name"), "root_task_id": root.get("task_id")}


class WorkflowService:
    def __init__(self, *, index: TaskIndex, workflows: WorkflowIndex,
                 stored: PgWorkflows | None,
                 run_blocking: Callable[..., asyncio.Future[Any]]) -> None:
        self.index = index
        self.memory = workflows
        self.stored = stored
        self._run_blocking = run_blocking
        self._answers: OrderedDict[tuple[str, str], tuple[Any, JsonText]] = OrderedDict()

    def _source(self, source: str) -> str:
        if source == "db" and self.stored is None:
            raise InvalidQuery("source=db needs DATABASE_URL", {"parameter": "source"})
        return source

    async def records(self, workflow_id: str, source: str = "auto", *,
                      full_canvas: bool = False) -> tuple[list[dict[str, Any]], str]:
        """The workflow's records and who gave them (memory, db, memory+db);
        ``full_canvas``: PostgreSQL's links with their arguments (a resume)."""
        self.index.sync()
        memory = self.memory.records(workflow_id) if source != "db" else []
        if source == "memory" or self.stored is None:
            return memory, "memory"
        stored = await self._run_blocking(
            partial(self.stored.records, workflow_id, full_canvas=full_canvas))
        if source == "db" or not memory:
            return stored, "db"
        return merge_records(stored, memory), "memory+db" if stored else "memory"

    def _in_memory(self, some_id: str) -> str | None:
        self.index.sync()
        if some_id in self.memory.members:
            return some_id
        return self.memory.workflow_of(some_id)

    async def resolve(self, some_id: str, source: str = "auto") -> str:
        """The workflow ``some_id`` names: a workflow id, or any of its tasks' ids."""
        return (await self._resolved(some_id, source))[0]

    async def _resolved(self, some_id: str, source: str) -> tuple[str, tuple[Any, ...]]:
        """The workflow ``some_id`` names and what says whether it changed:
        memory's change count and PostgreSQL's rows (their count and latest
        ``updated_at``), in one round trip to PostgreSQL."""
        workflow = self._in_memory(some_id) if source != "db" else None
        stored: tuple[Any, ...] = ()
        if source != "memory" and self.stored is not None:
            if workflow is not None:
                stored = await self._run_blocking(self.stored.validator, workflow)
            else:
                workflow, stored = await self._run_blocking(self.stored.lookup, some_id)
        if workflow is None:
            raise NotFound(f"unknown workflow {some_id}", {"root_id": some_id})
        memory = self.memory.version.get(workflow, -1) if source != "db" else None
        return workflow, (memory, *stored)

    async def tree(self, some_id: str, source: str = "auto") -> dict[str, Any]:
        """The raw tree (epoch times) of the workflow ``some_id`` names."""
        source = self._source(source)
        workflow_id = await self.resolve(some_id, source)
        records, answered = await self.records(workflow_id, source)
        if not records:
            raise NotFound(f"unknown workflow {some_id}", {"root_id": some_id})
        tree = build_tree(workflow_id, records)
        tree["source"] = answered
        return tree

    async def get(self, some_id: str, source: str = "auto") -> JsonText:
        """``GET /workflows/{root_id}``, encoded. The answer is kept and given
        again while nothing of the workflow changed: memory's change count and
        PostgreSQL's rows (their count and latest ``updated_at``, one indexed
        read) say so, so a finished tree of a thousand tasks is not rebuilt
        for every look (the console refreshes it)."""
        source = self._source(source)
        workflow_id, validator = await self._resolved(some_id, source)
        key = (workflow_id, source)
        kept = self._answers.get(key)
        if kept is not None and kept[0] == validator:
            self._answers.move_to_end(key)
            return kept[1]
        records, answered = await self.records(workflow_id, source)
        if not records:
            raise NotFound(f"unknown workflow {some_id}", {"root_id": some_id})
        tree = build_tree(workflow_id, records)
        answer = JsonText(encode_answer(present_tree(tree, answered)))
        self._answers[key] = (validator, answer)
        while len(self._answers) > KEPT_ANSWERS:
            self._answers.popitem(last=False)
        return answer

    async def listing(self, *, state: str | None, name: str | None, limit: int,
                   cursor: str | None, source: str = "auto") -> dict[str, Any]:
        """Workflows newest first (by their first task), filtered by overall
        state and root name, ``limit`` per page, ``next`` the cursor."""
        source = self._source(source)
        self.index.sync()
        before = _decode_cursor(cursor)
        out: list[dict[str, Any]] = []
        last: tuple[float, str] | None = before
        exhausted = False
        for _ in range(MAX_SCAN_ROUNDS):
            candidates = await self._candidates(last, limit * 2, source)
            if not candidates:
                exhausted = True
                break
            for workflow_id, started in candidates:
                last = (started, workflow_id)
                records, answered = await self.records(workflow_id, source)
                if not records:
                    continue
                tree = build_tree(workflow_id, records)
                tree["source"] = answered
                root = tree["nodes"][0] if tree["nodes"] else {}
                if state and tree["state"] != state:
                    continue
                if name and not name_matches(name, root.get("name")):
                    continue
                out.append(summary_of(present_tree(tree, answered)))
                if len(out) == limit:
                    break
            if len(out) == limit:
                break
        more = not exhausted and last is not None and len(out) == limit
        return {"workflows": out, "next": _encode_cursor(last) if more else None}

    async def _candidates(self, before: tuple[float, str] | None, limit: int, source: str
                          ) -> list[tuple[str, float]]:
        found: dict[str, float] = {}
        if source != "db":
            found = {workflow_id: started
                     for workflow_id, started in self.memory.started.items()
                     if before is None or (started, workflow_id) < before}
        if source != "memory" and self.stored is not None:
            for workflow_id, started in await self._run_blocking(
                    self.stored.newest, before, limit):
                found[workflow_id] = min(started, found.get(workflow_id, started))
        ordered = sorted(found.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        return ordered[:limit]


def _encode_cursor(position: tuple[float, str] | None) -> str | None:
    return None if position is None else f"{position[0]!r}|{position[1]}"


def _decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    if cursor is None:
        return None
    started, sep, workflow_id = cursor.partition("|")
    try:
        if not sep or not workflow_id:
            raise ValueError(cursor)
        return float(started), workflow_id
    except ValueError:
        raise InvalidQuery("invalid cursor", {"parameter": "cursor"}) from None
