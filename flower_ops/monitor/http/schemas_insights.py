"""Component schemas of the console's series and task-name table
(``/series``, ``/task-names``; conventions in ``schemas.py``)."""
from __future__ import annotations

from flower_ops.monitor.http.schemas import (
    COUNT,
    INSTANT,
    N_DURATION,
    N_STRING,
    STRING,
    Schema,
    closed,
    mapping,
    nullable,
    ref,
    with_description,
)

_PER_MINUTE = "one value per minute of `minutes`"
_COUNTS = {"type": "array", "items": COUNT, "description": _PER_MINUTE}
_DEPTHS = {"type": "array", "items": nullable(COUNT),
           "description": f"{_PER_MINUTE}: ready messages at the minute's last sample; "
                          "null when not sampled (before the monitor started, or the broker "
                          "did not answer)"}
_DURATIONS = {"type": "array", "items": N_DURATION,
              "description": f"{_PER_MINUTE}: seconds, of the tasks of this name finished "
                             "in that minute; null when none"}

SERIES = closed({
    "step_seconds": {"type": "integer", "enum": [60]},
    "since": with_description(INSTANT, "the start of the first minute"),
    "until": with_description(INSTANT, "the end of the range asked for (exclusive)"),
    "source": {"type": "string", "enum": ["memory", "memory+db"],
               "description": "memory+db: minutes before memory_since came from PostgreSQL"},
    "memory_since": with_description(INSTANT, "minutes from this one on come from the "
                                     "monitor's memory; earlier ones from PostgreSQL (or, "
                                     "without DATABASE_URL, read as nothing finished)"),
    "minutes": {"type": "array", "items": INSTANT,
                "description": "the start of each minute, oldest first, contiguous"},
    "completed": with_description(_COUNTS, "tasks that reached SUCCESS in that minute"),
    "failed": with_description(_COUNTS, "tasks that reached FAILURE in that minute"),
    "queues": mapping(_DEPTHS, "by queue name"),
    "runtime": mapping(closed({"p50": _DURATIONS, "p95": _DURATIONS}),
                       "by task name (the names asked for, else the 50 that ran most)"),
}, description="GET /series")

LAST_FAILURE = closed({
    "id": with_description(STRING, "the task id (GET /tasks/{task_id})"),
    "at": INSTANT, "exception": N_STRING,
})

TASK_NAME_STATS = closed({
    "name": STRING,
    "runs": with_description(COUNT, "tasks of this name that finished in the window"),
    "succeeded": COUNT, "failed": COUNT,
    "failure_rate": nullable({"type": "number", "minimum": 0, "maximum": 1}),
    "p50": N_DURATION, "p95": N_DURATION, "p99": N_DURATION,
    "last_failure": nullable(ref("LastFailure")),
})

TASK_NAME_LIST = closed({
    "since": INSTANT, "until": INSTANT,
    "source": {"type": "string", "enum": ["memory", "db"]},
    "names": {"type": "array", "items": ref("TaskNameStats")},
}, description="GET /task-names")


SCHEMAS: dict[str, Schema] = {
    "Series": SERIES, "LastFailure": LAST_FAILURE, "TaskNameStats": TASK_NAME_STATS,
    "TaskNameList": TASK_NAME_LIST,
}
