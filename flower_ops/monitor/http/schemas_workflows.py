"""Component schemas of the workflow answers (``/workflows``, its tree, resume
and cancel; conventions in ``schemas.py``)."""
from __future__ import annotations

from flower_ops.monitor.http.schemas import (
    BOOLEAN,
    COUNT,
    DURATION,
    N_COUNT,
    N_INSTANT,
    N_STRING,
    STRING,
    STRINGS,
    TASK_STATE,
    Schema,
    closed,
    mapping,
    nullable,
    ref,
    with_description,
)

WORKFLOW_STATE = {"type": "string", "enum": ["running", "succeeded", "failed", "cancelled"],
                  "description": "running while any step has not ended; then cancelled if "
                                 "a step was revoked, failed if a step failed (and was not "
                                 "retried), else succeeded"}
KIND = {"type": "string", "enum": ["chain", "group", "chord", "tree"],
        "description": "a chain or group with its callbacks, errbacks and resumed runs "
                       "is still one; tree: a task's children, or a mix"}
SOURCE = {"type": "string", "enum": ["memory", "db", "memory+db"],
          "description": "who answered: Flower's memory, PostgreSQL, or both merged"}
COUNTS = closed({
    "total": with_description(COUNT, "nodes, steps not published yet included"),
    "by_state": mapping(COUNT, "nodes per task state"),
    "not_sent": with_description(COUNT, "nodes Celery has not sent (yet, or ever: a step "
                                 "after one that failed is FAILURE, never sent)"),
})

_COMMON: dict[str, Schema] = {
    "root_id": with_description(STRING, "the workflow's id: its root task's id (a chain, "
                                "callbacks, children), or its group's id (a group or chord "
                                "sent on its own)"),
    "kind": KIND, "state": WORKFLOW_STATE,
    "failed_at": with_description(N_STRING, "state failed: the first step that failed"),
    "counts": ref("WorkflowCounts"),
    "started": with_description(N_INSTANT, "its first step's first event"),
    "finished": with_description(N_INSTANT, "its last step's end (null while running)"),
    "source": SOURCE,
}

NODE = closed({
    "task_id": STRING, "name": N_STRING, "state": TASK_STATE,
    "published": with_description(BOOLEAN, "false: a step Celery has not sent yet (known "
                                  "from the links of the steps before it); a failed one "
                                  "never ran because a step before it failed"),
    "sent": N_INSTANT, "started": N_INSTANT, "finished": N_INSTANT,
    "runtime": nullable(DURATION), "retries": N_COUNT, "worker": N_STRING, "queue": N_STRING,
    "exception": N_STRING, "parent_id": N_STRING,
    "group_id": N_STRING, "group_index": N_COUNT,
    "retry_of": with_description(N_STRING, "the step this run retried or resumed"),
    "retried_as": with_description(N_STRING, "the run that retried or resumed this step"),
}, description="One task of a workflow")

EDGE = closed({
    "from": STRING, "to": STRING,
    "kind": {"type": "string",
             "enum": ["chain", "chord", "callback", "errback", "child", "retry"],
             "description": "chain: the next step; chord: header member → body; callback / "
                            "errback: link / link_error; child: published by the task "
                            "outside the canvas; retry: the run that retried or resumed it"},
})

GROUP = closed({
    "group_id": STRING, "members": with_description(STRINGS, "task ids, by group index"),
    "chord": with_description(N_STRING, "the chord body's task id (a chord's header)"),
})

WORKFLOW = closed({
    **_COMMON,
    "nodes": {"type": "array", "items": ref("WorkflowNode"),
              "description": "the root first, then along the edges"},
    "edges": {"type": "array", "items": ref("WorkflowEdge")},
    "groups": {"type": "array", "items": ref("WorkflowGroup")},
}, description="GET /workflows/{root_id}")

SUMMARY = closed({**_COMMON, "name": with_description(N_STRING, "the root task's name"),
                  "root_task_id": N_STRING},
                 description="A workflow in GET /workflows")

LIST = closed({
    "workflows": {"type": "array", "items": ref("WorkflowSummary")},
    "next": with_description(N_STRING, "cursor of the next page; null on the last"),
}, description="GET /workflows")

_RESUMED_TASK = closed({"task_id": N_STRING, "new_id": STRING, "name": N_STRING})
RESUMED = closed({
    "kind": {"type": "string", "enum": ["chain", "chord", "group", "task"],
             "description": "how it resumes: chain (with its continuation), chord (the "
                            "failed members, then the body once), group, task (alone)"},
    "outcome": {"type": "string", "enum": ["retried", "would_retry"]},
    "tasks": {"type": "array", "items": _RESUMED_TASK,
              "description": "the failed steps sent again, each as new_id"},
    "continuation": {"type": "array", "items": _RESUMED_TASK,
                     "description": "the steps that run after them (new ids)"},
})

RETRY_ANSWER = closed({
    "root_id": STRING, "dry_run": BOOLEAN,
    "resumed": {"type": "array", "items": ref("WorkflowResumed")},
    "audit": {"type": "string", "enum": ["database", "log"]},
}, required=["root_id", "dry_run", "resumed"], description="POST /workflows/{root_id}/retry")

CANCEL_ANSWER = closed({
    "root_id": STRING, "dry_run": BOOLEAN,
    "counts": mapping(COUNT, "nodes per outcome"),
    "results": {"type": "array", "items": ref("BulkItem")},
    "audit": {"type": "string", "enum": ["database", "log"]},
}, description="POST /workflows/{root_id}/cancel")

SCHEMAS: dict[str, Schema] = {
    "WorkflowCounts": COUNTS, "WorkflowNode": NODE, "WorkflowEdge": EDGE,
    "WorkflowGroup": GROUP, "Workflow": WORKFLOW, "WorkflowSummary": SUMMARY,
    "WorkflowList": LIST, "WorkflowResumed": RESUMED, "WorkflowRetryAnswer": RETRY_ANSWER,
    "WorkflowCancelAnswer": CANCEL_ANSWER,
}
