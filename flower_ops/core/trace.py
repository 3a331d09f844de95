"""W3C trace context (``traceparent``) on task messages: the trace id a
tracing setup (e.g. ``opentelemetry-instrumentation-celery``) gave a task,
carried to the monitor and the sync worker in a field of ``task-sent``."""
from __future__ import annotations

import re
from typing import Any

# the task-sent event field that carries the trace id (see instrument.py)
TRACE_ID_FIELD = "flower_ops_trace_id"
TRACEPARENT_HEADER = "traceparent"

# version-traceid-parentid-flags (https://www.w3.org/TR/trace-context/#traceparent-header)
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def trace_id_of(traceparent: Any) -> str | None:
    """The trace id of a ``traceparent`` value, or None when it is not a
    valid one (version ``ff``, an all-zero trace or parent id, wrong form)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None:
        return None
    version, trace_id, parent_id, _ = match.groups()
    if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    if version == "00" and len(traceparent.strip()) != 55:
        return None
    return trace_id


def clean_trace_id(value: Any) -> str | None:
    """A trace id as carried in an event field: 32 lowercase hex digits, or None."""
    if isinstance(value, str) and _TRACE_ID.match(value) and set(value) != {"0"}:
        return value
    return None
