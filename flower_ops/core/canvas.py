"""Celery's canvas as captured at publish: a task message's workflow links.

A task message (protocol 2) carries its place in a workflow: the ``group``
and ``group_index`` headers, and in the body's embed the chain continuation
(``chain``, the remaining steps, last first), the ``link`` / ``link_error``
callbacks and the chord body (``chord``). Each is a signature dict with the
exact arguments of a step that has not been published yet.
``instrument(app)`` copies these, as sent, into a ``task-sent`` field of its
own (``CANVAS_FIELD``, JSON), so the monitor (through Flower's memory) and
the sync worker (a JSONB column) hold them, and a failed step can be sent
again with its original continuation.

Celery gives each workflow a root (``root_id``) but a group or chord sent
from a client has none in common: every member is its own root. So
``instrument`` also names the workflow (``WORKFLOW_FIELD``, and the message
header of the same name, which the tasks a worker publishes inherit): the
workflow of the task that published it, else the group's id, else Celery's
root id.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kombu.utils.json import dumps, loads

CANVAS_FIELD = "flower_ops_canvas"
WORKFLOW_FIELD = "flower_ops_workflow"
# carried by a resumed step's message: {new task id: the id it stands in for}
RESUMES_HEADER = "flower_ops_resumes"
SIGNATURE_KEYS = ("task", "args", "kwargs", "options", "subtask_type", "immutable",
                  "chord_size")
# a long chain carries every later step in each message (Celery sends them so):
# past this, ids and names only (a chain of 1,000 steps: ~80 KB per message)
MAX_CANVAS_CHARS = 262_144


def signature_id(signature: Any) -> str | None:
    """The task id a signature was frozen with (None: given at publish)."""
    if type(signature) is dict:     # as decoded: the common case, without an ABC check
        options = signature.get("options")
        task_id = options.get("task_id") if type(options) is dict else None
        return task_id if type(task_id) is str else None
    if not isinstance(signature, Mapping):
        return None
    options = signature.get("options")
    task_id = options.get("task_id") if isinstance(options, Mapping) else None
    return task_id if isinstance(task_id, str) else None


def signature_name(signature: Any) -> str | None:
    if not isinstance(signature, Mapping):
        return None
    name = signature.get("task")
    return name if isinstance(name, str) else None


def is_simple(signature: Any) -> bool:
    """A plain task signature (not a group, chord or chain of its own)."""
    return (isinstance(signature, Mapping) and not signature.get("subtask_type")
            and signature_name(signature) not in ("celery.group", "celery.chord",
                                                  "celery.chain"))


def canvas_of(embed: Any, headers: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow links of a message: group, chain (in running order),
    callbacks, errbacks and chord body. Empty for a task outside a canvas."""
    canvas: dict[str, Any] = {}
    group = headers.get("group")
    if group:
        canvas["group"] = str(group)
        if headers.get("group_index") is not None:
            canvas["group_index"] = headers.get("group_index")
    if isinstance(embed, Mapping):
        chain = embed.get("chain")
        if chain:
            canvas["chain"] = [_plain(s) for s in reversed(list(chain))]
        for key, name in (("callbacks", "callbacks"), ("errbacks", "errbacks")):
            if embed.get(key):
                canvas[name] = [_plain(s) for s in embed[key]]
        if embed.get("chord"):
            canvas["chord"] = _plain(embed["chord"])
    return canvas


def _plain(signature: Any) -> Any:
    if isinstance(signature, Mapping):
        return {k: signature[k] for k in SIGNATURE_KEYS if k in signature}
    return signature


def encode_canvas(canvas: Mapping[str, Any]) -> str | None:
    """JSON text for the event; when a signature's arguments cannot be
    encoded exactly, the ids and names are kept and ``exact`` is false."""
    try:
        text = dumps({**canvas, "exact": True})
    except (TypeError, ValueError):
        text = dumps({**_skeleton(canvas), "exact": False})
    if len(text) > MAX_CANVAS_CHARS:
        text = dumps({**_skeleton(canvas), "exact": False})
    return text


def _skeleton(canvas: Mapping[str, Any]) -> dict[str, Any]:
    def bare(signature: Any) -> dict[str, Any]:
        return {"task": signature_name(signature),
                "options": {"task_id": signature_id(signature)},
                "subtask_type": (signature.get("subtask_type")
                                 if isinstance(signature, Mapping) else None)}

    out: dict[str, Any] = {k: v for k, v in canvas.items()
                           if k in ("group", "group_index", "resumes") and v is not None}
    for key in ("chain", "callbacks", "errbacks"):
        if canvas.get(key):
            out[key] = [bare(s) for s in canvas[key]]
    if canvas.get("chord"):
        out["chord"] = bare(canvas["chord"])
    return out


def links_of(canvas: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the tree needs of a canvas: ids and names, no arguments (a chain's
    messages repeat every later step with its arguments; a resume needs them,
    a look at the tree does not)."""
    if not canvas:
        return None
    return {**_skeleton(canvas), "exact": canvas.get("exact", True)}


def decode_canvas(value: Any) -> dict[str, Any] | None:
    """A canvas from an event field (text) or a JSONB column (dict)."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        decoded = loads(value)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None


def workflow_of(task_id: str, workflow: Any, root_id: Any, canvas: Mapping[str, Any] | None
                ) -> str | None:
    """The workflow a task belongs to, or None for a task outside any.

    ``instrument``'s own field first; else, for publishers without it,
    Celery's root id (a chain step, a task published by another), or the
    task itself when it carries links.
    """
    if isinstance(workflow, str) and workflow:
        return workflow
    if isinstance(root_id, str) and root_id and root_id != task_id:
        return root_id
    if canvas and any(canvas.get(k) for k in ("chain", "callbacks", "errbacks", "chord")):
        return task_id
    if canvas and canvas.get("group"):
        return str(canvas["group"])
    return None


def task_workflow(task: Any) -> str | None:
    """The workflow of a task in Flower's memory (its event fields)."""
    return workflow_of(task.uuid, getattr(task, WORKFLOW_FIELD, None),
                       getattr(task, "root_id", None), task_canvas(task))


def task_canvas(task: Any) -> dict[str, Any] | None:
    """A task's canvas from Flower's memory, decoded once and kept."""
    cached = task.__dict__.get("_flower_ops_canvas_decoded", False)
    if cached is not False:
        return cached
    canvas = decode_canvas(getattr(task, CANVAS_FIELD, None))
    if getattr(task, CANVAS_FIELD, None) is not None:
        task.__dict__["_flower_ops_canvas_decoded"] = canvas
    return canvas
