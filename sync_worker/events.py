"""Celery task events -> ``Transition``s (no I/O): which state and lifecycle
time an event means, and the fields it carries.

Arguments: an instrumented publisher's ``task-sent`` carries them exactly
in fields of their own (``payload.EXACT_ARGS_FIELD``...); otherwise they are
reprs, and the common ones that are also JSON once the outer tuple
parentheses become brackets are parsed with ``json.loads``, anything else
with ``payload.decode_args`` (same values, ~10x cheaper).
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from flower_ops.core.canvas import (
    CANVAS_FIELD,
    WORKFLOW_FIELD,
    decode_canvas,
    links_of,
    workflow_of,
)
from flower_ops.core.lifecycle import EVENT_STATES
from flower_ops.core.payload import (
    EXACT_ARGS_FIELD,
    EXACT_KWARGS_FIELD,
    EXACT_PREFIX,
    arguments,
    decode_args,
)
from flower_ops.core.trace import TRACE_ID_FIELD, clean_trace_id
from flower_ops.core.transitions import Transition


def to_epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _reject_constant(name: str) -> Any:
    raise ValueError(name)   # NaN, Infinity: not what a Python repr means by them


_raw_decode = json.JSONDecoder(parse_constant=_reject_constant).raw_decode


def _decode_repr(text: Any) -> tuple[Any, bool]:
    """``decode_args``, with a fast path for the common reprs that are also
    JSON once the outer tuple parentheses become brackets (``(2, 3)``, ``{}``,
    ``42``): ``json.loads`` is ~10x cheaper than ``ast.literal_eval``, and for
    such text both give the same value. Anything else goes to decode_args."""
    if isinstance(text, str) and text and text[0] in "([{-0123456789" \
            and not text.startswith(EXACT_PREFIX):
        candidate = f"[{text[1:-1]}]" if text[0] == "(" and text[-1] == ")" else text
        try:
            value, end = _raw_decode(candidate)
            if end == len(candidate):
                return value, False
        except ValueError:
            pass
    return decode_args(text)


def transition_from_event(event: dict[str, Any]) -> Transition | None:
    """Our ``Transition`` for a Celery task event; None for other events."""
    kind = event.get("type")
    mapped = EVENT_STATES.get(kind)  # type: ignore[arg-type]
    task_id = event.get("uuid")
    if mapped is None or not task_id:
        return None
    state, time_field = mapped
    timestamp = event.get("timestamp") or time.time()
    fields: dict[str, Any] = {}
    if kind == "task-sent":
        fields["queue"] = event.get("queue")
        fields["routing_key"] = event.get("routing_key")
        fields["exchange"] = event.get("exchange") or None
        fields["trace_id"] = clean_trace_id(event.get(TRACE_ID_FIELD))
        canvas = decode_canvas(event.get(CANVAS_FIELD))
        fields["canvas"] = canvas
        fields["links"] = links_of(canvas)
        fields["workflow_id"] = workflow_of(str(task_id), event.get(WORKFLOW_FIELD),
                                            event.get("root_id"), canvas)
    else:
        fields["worker"] = event.get("hostname")
    if kind in ("task-sent", "task-received"):
        fields["task_name"] = event.get("name")
        fields["parent_id"] = event.get("parent_id")
        fields["root_id"] = event.get("root_id")
        fields["retries"] = event.get("retries")
        fields["eta"] = to_epoch(event.get("eta"))
        fields["expires"] = to_epoch(event.get("expires"))
        fields["args"], fields["kwargs"], fields["args_exact"] = arguments(
            event.get(EXACT_ARGS_FIELD), event.get(EXACT_KWARGS_FIELD),
            event.get("args"), event.get("kwargs"), decode=_decode_repr)
    elif kind == "task-succeeded":
        fields["result"] = _decode_repr(event.get("result"))[0]
        fields["runtime"] = event.get("runtime")
    elif kind in ("task-failed", "task-retried"):
        fields["error"] = event.get("exception")
        fields["traceback"] = event.get("traceback")
    elif kind == "task-revoked":
        reason = "expired" if event.get("expired") else (
            "terminated" if event.get("terminated") else "revoked")
        fields["reason"] = reason
        fields["error"] = f"TaskRevokedError: {reason}"
    elif kind == "task-rejected":
        fields["error"] = "Rejected: the worker rejected the message"
    return Transition(str(task_id), state, float(timestamp), time_field, fields)
