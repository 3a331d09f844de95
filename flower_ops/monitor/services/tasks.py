"""Task queries: listing and details, from Flower's memory or PostgreSQL."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flower_ops.core.canvas import task_workflow
from flower_ops.core.errors import NotConfigured, NotFound
from flower_ops.core.lifecycle import (
    FINAL_STATES,
    TASK_STATES,
    TIME_FIELD_STATES,
    TIMESTAMP_FIELDS,
    api_state,
    in_lifecycle_order,
    outcome_times,
    with_one_outcome,
)
from flower_ops.core.payload import decode_args
from flower_ops.core.query import TaskPage, TaskQuery
from flower_ops.core.times import with_times
from flower_ops.core.trace import TRACE_ID_FIELD, clean_trace_id
from flower_ops.monitor.services.search import SearchTexts
from flower_ops.monitor.services.task_listing import (
    ALL_CURSOR,
    DB_CURSOR,
    MEMORY_CURSOR,
    SOURCE_OF_CURSOR,
    AllSources,
    encode_cursor,
    memory_counts,
    scoped,
    source_of,
)
from flower_ops.monitor.sources.flower_state import task_arguments, task_queue, task_worker
from flower_ops.monitor.sources.task_index import TaskIndex

if TYPE_CHECKING:
    from flower_ops.db.history import PgHistory

_OUTCOME_FIELDS = ("state", "result", "exception", "traceback", "runtime", "succeeded",
                   "failed", "revoked", "retries")


# A task's instants and durations, as the API and the feed say them
TASK_INSTANTS = (*TIMESTAMP_FIELDS, "timestamp", "eta", "expires", "rejected", "updated")
TASK_DURATIONS = ("runtime",)


def present_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task dict (epoch floats inside) as it leaves: instants ISO 8601 UTC,
    durations rounded seconds (``core/times.py``), its history's too."""
    out = with_times(task, instants=TASK_INSTANTS, durations=TASK_DURATIONS)
    if out.get("history"):
        out["history"] = [with_times(step, instants=("timestamp",), durations=("runtime",))
                          for step in out["history"]]
    return out


def present_page(page: TaskPage) -> TaskPage:
    return TaskPage(tasks=[present_task(t) for t in page.tasks], total=page.total,
                    next=page.next, prev=page.prev, source=page.source, extra=page.extra)


def _decoded(value: Any) -> Any:
    return decode_args(value)[0]


def _history(task: Any) -> list[dict[str, Any]]:
    """Steps from the lifecycle timestamps Flower keeps (memory only: the
    latest of each), in lifecycle order (``lifecycle.in_lifecycle_order``)."""
    # Flower also keeps "rejected" (task-rejected), a step of its own here
    names = {**TIME_FIELD_STATES, "rejected": "REJECTED"}
    return in_lifecycle_order(
        [{"state": state, "timestamp": getattr(task, field)}
         for field, state in names.items() if getattr(task, field, None)])


# The database records task-rejected as FAILURE, Flower as "rejected"
_SAME_STEP_STATE = {"REJECTED": "FAILURE"}
# Both hold an event's own timestamp: PostgreSQL to the microsecond
_SAME_STEP_SECONDS = 2e-6


def merged_history(stored: list[dict[str, Any]], memory: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """The database's steps, plus those only memory knows yet (events the
    sync worker has not written), in lifecycle order."""
    known: dict[str, list[float]] = {}
    for step in stored:
        state = _SAME_STEP_STATE.get(step["state"], step["state"])
        known.setdefault(state, []).append(float(step["timestamp"] or 0.0))
    extra = [step for step in memory
             if not any(abs(float(step["timestamp"]) - at) <= _SAME_STEP_SECONDS
                        for at in known.get(_SAME_STEP_STATE.get(step["state"], step["state"]),
                                            ()))]
    return in_lifecycle_order([*stored, *extra]) if extra else stored


def _one_outcome(detail: dict[str, Any]) -> dict[str, Any]:
    detail["history"] = with_one_outcome(detail.get("history") or [], detail.get("state"))
    return detail


def task_summary(task: Any) -> dict[str, Any]:
    state = api_state(task.state)
    args, kwargs, args_exact = task_arguments(task)
    summary = {
        "id": task.uuid,
        "name": task.name,
        "state": state,
        "worker": task_worker(task),
        "queue": task_queue(task),
        "args": args,
        "kwargs": kwargs,
        "args_exact": args_exact,
        "result": _decoded(getattr(task, "result", None)),
        "exception": getattr(task, "exception", None),
        "retries": getattr(task, "retries", None),
        "runtime": getattr(task, "runtime", None),
        "timestamp": getattr(task, "timestamp", None),
    }
    times = {field: getattr(task, field, None) for field in TIMESTAMP_FIELDS}
    if task.state == "REJECTED":        # refused by a worker: failed then, as stored
        times["failed"] = times.get("failed") or getattr(task, "rejected", None)
    summary.update(outcome_times(state, times))
    return summary


def task_detail(task: Any) -> dict[str, Any]:
    detail = task_summary(task)
    detail.update(
        traceback=getattr(task, "traceback", None),
        routing_key=getattr(task, "routing_key", None),
        exchange=getattr(task, "exchange", None),
        eta=getattr(task, "eta", None),
        expires=getattr(task, "expires", None),
        rejected=getattr(task, "rejected", None),
        client=getattr(task, "client", None),
        parent_id=getattr(task, "parent_id", None),
        root_id=getattr(task, "root_id", None),
        children=sorted(child.uuid for child in getattr(task, "children", ()) if child),
        history=_history(task),
        retry_of=None,
        retried_as=None,
        trace_id=clean_trace_id(getattr(task, TRACE_ID_FIELD, None)),
        workflow_id=task_workflow(task),
        source="memory",
    )
    return detail


SUMMARY_CACHE_SIZE = 5_000


class SummaryCache:
    """Task summaries as they leave (``present_task``), dropped when the
    index reports a change.

    Parsing args, kwargs and results is most of a listing's cost; pages are
    read far more often than tasks change, so each summary is built once.
    """

    def __init__(self, *, max_entries: int = SUMMARY_CACHE_SIZE) -> None:
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max_entries = max_entries

    def invalidate(self, changed: set[str]) -> None:
        entries = self._entries
        if len(changed) < len(entries):
            for uuid in changed:
                entries.pop(uuid, None)
        else:
            for uuid in [u for u in entries if u in changed]:
                del entries[uuid]

    def get(self, uuid: str, task: Any) -> dict[str, Any]:
        summary = self._entries.get(uuid)
        if summary is None:
            summary = present_task(task_summary(task))
            self._entries[uuid] = summary
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return summary


class TaskQueryService:
    """Answers task listings and details.

    Memory (Flower's event state) answers by default. PostgreSQL answers for
    ``source=db``, for cursors it issued, and for details of tasks Flower no
    longer holds; its details are merged into memory details (history,
    retry links) when both know a task.
    """

    def __init__(self, *, index: TaskIndex, history: PgHistory | None,
                 run_blocking: Callable[..., asyncio.Future[Any]],
                 trace_url: str | None = None) -> None:
        self.index = index
        self.trace_url = trace_url      # e.g. https://tracing.example/trace/{trace_id}
        self.history = history
        self._run_blocking = run_blocking
        self.summaries = SummaryCache()
        index.change_listeners.append(self.summaries.invalidate)
        self.search_texts = SearchTexts(lambda: self.tasks)
        index.change_listeners.append(self.search_texts.invalidate)
        self.all_sources = AllSources(
            index=index, history=history, run_blocking=run_blocking,
            summary=self.summaries.get, present=present_task,
            search=self.search_texts.matching) if history is not None else None

    @property
    def tasks(self) -> Any:
        return self.index.state.tasks.data

    def list_memory(self, query: TaskQuery, *, kind: str = MEMORY_CURSOR) -> TaskPage:
        """A page from memory (``kind``: the cursors' letter; ``a`` for
        ``source=all`` without a database)."""
        page_query = scoped(query, kind)
        self.index.sync()
        candidates = self.search_texts.matching(query.search) if query.search else None
        ids, total, next_raw, prev_raw = self.index.page(page_query, candidates=candidates)
        tasks = self.tasks
        summaries = self.summaries
        return TaskPage(tasks=[summaries.get(uuid, tasks[uuid]) for uuid in ids], total=total,
                        next=encode_cursor(kind, next_raw),
                        prev=encode_cursor(kind, prev_raw, backward=True),
                        source=SOURCE_OF_CURSOR[kind])

    async def list(self, query: TaskQuery) -> TaskPage:
        """``GET /tasks``: memory (the default), PostgreSQL (``db``) or both
        as one list (``all``); ``auto`` follows the cursor's source."""
        source = source_of(query)
        if source == "memory":
            return self.list_memory(query)
        if source == "all":
            if self.all_sources is None:
                return self.list_memory(query, kind=ALL_CURSOR)
            return await self.all_sources.list(scoped(query, ALL_CURSOR))
        history = self._require_history()
        page_query = scoped(query, DB_CURSOR)
        page: TaskPage = present_page(await self._run_blocking(history.list_tasks, page_query))
        return TaskPage(tasks=page.tasks, total=page.total, extra=page.extra,
                        next=encode_cursor(DB_CURSOR, page.next),
                        prev=encode_cursor(DB_CURSOR, page.prev, backward=True), source="db")

    async def counts(self, query: TaskQuery) -> dict[str, Any]:
        """``GET /tasks/counts``: tasks per state for the filters of ``query``
        but its states (and its cursor, limit and order), from the same
        source a listing would read."""
        query = TaskQuery(**{**query.__dict__, "cursor": None, "states": frozenset()})
        source = "memory" if query.source == "auto" else query.source
        if source == "db":
            found = await self._run_blocking(self._require_history().listing.counts, query)
        elif source == "all" and self.all_sources is not None:
            found = await self.all_sources.counts(query)
        else:
            self.index.sync()
            candidates = self.search_texts.matching(query.search) if query.search else None
            found = memory_counts(self.index, query, candidates)
        by_state = {state: int(found.get(state, 0)) for state in TASK_STATES}
        answer = {"by_state": by_state, "total": sum(by_state.values()), "source": source}
        # PostgreSQL past 1,000 rows of a state: the planner's estimate, said
        estimated: frozenset[str] = getattr(found, "estimated", frozenset())
        if estimated:
            answer["estimated_states"] = sorted(estimated)
        return answer

    async def get(self, task_id: str) -> dict[str, Any]:
        self.index.sync()
        task = self.tasks.get(task_id)
        stored: dict[str, Any] | None = None
        if self.history is not None:
            try:
                stored = await self._run_blocking(self.history.get_task, task_id)
            except NotFound:
                stored = None
            except Exception:
                if task is None:
                    raise
        if task is None and stored is None:
            raise NotFound(f"unknown task {task_id}", {"task_id": task_id})
        if task is None:
            assert stored is not None
            return present_task(self._traced(_one_outcome(stored)))
        detail = task_detail(task)
        if stored is not None:
            detail["history"] = merged_history(stored.get("history") or [],
                                               detail["history"])
            for key in ("retry_of", "retried_as"):
                detail[key] = stored.get(key)
            detail["trace_id"] = detail["trace_id"] or stored.get("trace_id")
            detail["workflow_id"] = detail["workflow_id"] or stored.get("workflow_id")
            if not detail["args_exact"] and stored.get("args_exact"):
                detail.update(args=stored["args"], kwargs=stored["kwargs"], args_exact=True)
            if detail["state"] not in FINAL_STATES and stored.get("state") in FINAL_STATES:
                # The monitor missed the end (its event stream was down: a
                # broker restart or cut); the sync worker's reconciliation
                # against the result backend did not, and the database is right.
                for key in _OUTCOME_FIELDS:
                    if key in stored:
                        detail[key] = stored[key]
            detail["source"] = "memory+db"
        return present_task(self._traced(_one_outcome(detail)))

    def _traced(self, detail: dict[str, Any]) -> dict[str, Any]:
        """``detail`` with ``trace_url``: the configured link to its trace, or None."""
        trace_id = detail.get("trace_id")
        detail["trace_url"] = (self.trace_url.replace("{trace_id}", trace_id)
                               if self.trace_url and trace_id else None)
        return detail

    def _require_history(self) -> PgHistory:
        if self.history is None:
            raise NotConfigured("task history needs DATABASE_URL", {"setting": "DATABASE_URL"})
        return self.history
