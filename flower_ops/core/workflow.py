"""A workflow's tree from its tasks' records: nodes, edges, groups, its state.

One builder for both sources (Flower's memory and PostgreSQL), so the two
answers agree. A record is a task as the API shows it (``id``, ``name``,
``state``, times, ``retries``, ``parent_id``, ``retry_of``/``retried_as``)
plus its ``canvas`` (``core/canvas.py``). Steps a chain has not published
yet, and a chord body not yet sent, are known only from the canvas of the
tasks before them: they are nodes with ``published: false``.

Edges: ``chain`` (a step → the next), ``chord`` (each header member → the
body), ``callback`` / ``errback`` (``link`` / ``link_error``), ``child`` (a
task published by another outside the canvas), ``retry`` (a task → the run
that retried or resumed it). Group membership is in ``groups`` and each
node's ``group_id``/``group_index``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from flower_ops.core.canvas import signature_id, signature_name
from flower_ops.core.lifecycle import FINAL_STATES

NODE_FIELDS = ("sent", "received", "started", "succeeded", "failed", "revoked", "retried")
FAILED = ("FAILURE",)
# states a task never published can be in (Celery's backend marks the rest of a
# broken chain failed; a workflow cancel revokes steps before they are sent)
_UNSEEN_STATES = frozenset({*FINAL_STATES, "PENDING"})


def build_tree(workflow_id: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The tree of ``workflow_id`` from its tasks' records (any order)."""
    known = {r["id"]: r for r in records}
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    seen_edges: set[tuple[str, str, str]] = set()
    groups: dict[str, dict[str, Any]] = {}
    superseded: dict[str, str] = {}

    def edge(source: str | None, target: str | None, kind: str) -> None:
        if source and target and (source, target, kind) not in seen_edges:
            seen_edges.add((source, target, kind))
            edges.append({"from": source, "to": target, "kind": kind})

    def planned(signature: Any) -> str | None:
        task_id = signature_id(signature)
        if task_id and task_id not in known and task_id not in nodes:
            nodes[task_id] = _planned_node(task_id, signature_name(signature))
        return task_id

    in_order = sorted(known.values(), key=_order)
    for record in in_order:
        nodes[record["id"]] = _node(record)
    for record in in_order:
        task_id = record["id"]
        canvas = record.get("canvas") or {}
        group = canvas.get("group")
        if group:
            entry = groups.get(group)
            if entry is None:
                entry = groups[group] = {"group_id": group, "members": {}, "chord": None}
            entry["members"][task_id] = canvas.get("group_index")
            nodes[task_id]["group_id"] = group
            nodes[task_id]["group_index"] = canvas.get("group_index")
        previous = task_id
        for signature in canvas.get("chain") or ():
            step = planned(signature)
            edge(previous, step, "chain")
            # every message of a chain repeats the steps after it: once the
            # next step's own record (with its links) is here, it says the rest
            if step in known and "chain" in (known[step].get("canvas") or {}):
                break
            previous = step or previous
        body = canvas.get("chord")
        if body:
            body_id = planned(body)
            edge(task_id, body_id, "chord")
            if group:
                groups[group]["chord"] = body_id
        for key, kind in (("callbacks", "callback"), ("errbacks", "errback")):
            if key in canvas:
                for signature in canvas[key] or ():
                    edge(task_id, planned(signature), kind)
        if "resumes" in canvas:
            superseded.update({old_id: new_id for new_id, old_id
                               in (canvas["resumes"] or {}).items()})
        if record.get("retried_as"):
            superseded[task_id] = record["retried_as"]
    linked = {e["to"] for e in edges}
    for record in in_order:
        parent = record.get("parent_id")
        if parent in nodes and record["id"] not in linked:
            edge(parent, record["id"], _link_kind(known.get(parent), record.get("name")))
    for old_id, new_id in superseded.items():
        if old_id in nodes and new_id in nodes:
            edge(old_id, new_id, "retry")
            nodes[old_id]["retried_as"] = new_id
            nodes[new_id]["retry_of"] = nodes[new_id].get("retry_of") or old_id
    for entry in groups.values():
        # a chord's body is sent with its header's group id: it is not a member
        body_id = entry["chord"]
        if body_id in entry["members"]:
            del entry["members"][body_id]
            nodes[body_id]["group_id"] = nodes[body_id]["group_index"] = None
    _mark_chain_failures(nodes, edges)
    ordered = _in_order(workflow_id, nodes, edges)
    return {
        "root_id": workflow_id,
        **_overall(ordered),
        "kind": _kind(edges, groups),
        "nodes": ordered,
        "edges": edges,
        "groups": [{"group_id": g["group_id"], "chord": g["chord"],
                    "members": [m for m, _ in sorted(g["members"].items(),
                                                     key=lambda kv: (kv[1] is None, kv[1]))]}
                   for g in groups.values()],
    }


def _link_kind(parent: Mapping[str, Any] | None, name: str | None) -> str:
    """How a task published by ``parent`` hangs off it: a link Celery sends
    gets its id only then, so it is told by name among the parent's links."""
    canvas = (parent or {}).get("canvas") or {}
    failed = (parent or {}).get("state") == "FAILURE"
    for key, kind in (("errbacks", "errback"), ("callbacks", "callback")):
        if any(signature_name(s) == name for s in canvas.get(key) or ()):
            if kind == "errback" and not failed:
                continue
            return kind
    return "child"


def _order(record: Mapping[str, Any]) -> tuple[float, str]:
    return (_first_time(record) or float("inf"), str(record["id"]))


def _first_time(record: Mapping[str, Any]) -> float | None:
    first: float | None = None
    for name in NODE_FIELDS:
        value = record.get(name)
        if type(value) is float and (first is None or value < first):
            first = value
    return first


def _node(record: Mapping[str, Any]) -> dict[str, Any]:
    finished = next((record.get(f) for f in ("succeeded", "failed", "revoked")
                     if record.get(f) is not None), None)
    return {
        "task_id": record["id"], "name": record.get("name"), "state": record.get("state"),
        "published": (record.get("sent") is not None or record.get("received") is not None
                      or record.get("started") is not None
                      or record.get("retried") is not None
                      or record.get("state") not in _UNSEEN_STATES),
        "sent": record.get("sent"), "started": record.get("started"), "finished": finished,
        "runtime": record.get("runtime"), "retries": record.get("retries"),
        "worker": record.get("worker"), "queue": record.get("queue"),
        "exception": record.get("exception"), "parent_id": record.get("parent_id"),
        "group_id": None, "group_index": None,
        "retry_of": record.get("retry_of"), "retried_as": record.get("retried_as"),
    }


def _planned_node(task_id: str, name: str | None) -> dict[str, Any]:
    return {"task_id": task_id, "name": name, "state": "PENDING", "published": False,
            "sent": None, "started": None, "finished": None, "runtime": None, "retries": 0,
            "worker": None, "queue": None, "exception": None, "parent_id": None,
            "group_id": None, "group_index": None, "retry_of": None, "retried_as": None}


def _mark_chain_failures(nodes: dict[str, dict[str, Any]], edges: list[dict[str, str]]) -> None:
    """A step after a failed one is never published: Celery stores it as
    failed in the result backend (the rest of a chain, a chord's body), and
    so does this tree; after a cancelled one it is cancelled (the workflow
    cancel revoked its id before it was sent)."""
    before = [(e["from"], e["to"]) for e in edges if e["kind"] in ("chain", "chord")]
    changed = True
    while changed:
        changed = False
        for source, target in before:
            node, previous = nodes.get(target), nodes.get(source)
            if node is None or previous is None or node["published"]:
                continue
            if previous["state"] in ("FAILURE", "REVOKED") and node["state"] == "PENDING":
                node["state"] = previous["state"]
                changed = True


def _in_order(root: str, nodes: dict[str, dict[str, Any]], edges: list[dict[str, str]]
              ) -> list[dict[str, Any]]:
    """Root first, then by edges breadth-first, then the rest as they came."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    children: dict[str, list[str]] = {}
    for e in edges:
        children.setdefault(e["from"], []).append(e["to"])
    incoming = {e["to"] for e in edges}
    starts = [root] if root in nodes else []
    starts += [n for n in nodes if n not in incoming and n != root]
    queue = deque(starts)
    while queue:
        current = queue.popleft()
        if current in seen or current not in nodes:
            continue
        seen.add(current)
        out.append(nodes[current])
        queue.extend(children.get(current, ()))
    out.extend(node for key, node in nodes.items() if key not in seen)
    return out


def _overall(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """running / succeeded / failed (at which node) / cancelled, and counts.

    A node some later run retried or resumed no longer decides the state.
    """
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["state"]] = counts.get(node["state"], 0) + 1
    current = [n for n in nodes if not n.get("retried_as")]
    running = [n for n in current if n["state"] not in FINAL_STATES and
               (n["published"] or not _blocked(n))]
    failed = [n for n in current if n["state"] in FAILED and n["published"]]
    revoked = [n for n in current if n["state"] == "REVOKED"]
    times = [t for n in nodes for t in (n["sent"], n["started"], n["finished"]) if t]
    finished_times = [n["finished"] for n in nodes if n["finished"]]
    if running:
        state = "running"
    elif revoked:
        state = "cancelled"
    elif failed:
        state = "failed"
    else:
        state = "succeeded"
    first_failed = (min(failed, key=lambda n: float(n["finished"] or "inf"))
                    if failed else None)
    return {
        "state": state,
        "failed_at": first_failed["task_id"] if first_failed and state == "failed" else None,
        "counts": {"total": len(nodes), "by_state": counts,
                   "not_sent": sum(1 for n in nodes if not n["published"])},
        "started": min(times) if times else None,
        "finished": max(finished_times) if finished_times and state != "running" else None,
    }


def _blocked(node: Mapping[str, Any]) -> bool:
    # an unpublished step counts as running only while nothing before it failed
    return node["state"] in FINAL_STATES


def _kind(edges: list[dict[str, str]], groups: Mapping[str, Any]) -> str:
    kinds = {e["kind"] for e in edges}
    if any(g["chord"] for g in groups.values()):
        return "chord" if "chain" not in kinds else "tree"
    # Celery sends a task's (old-style) errbacks as a group of one
    if any(len(g["members"]) > 1 for g in groups.values()):
        return "group" if not kinds - {"retry", "callback", "errback"} else "tree"
    # a chain with its callbacks, errbacks and resumed runs is still a chain
    return "chain" if "chain" in kinds else "tree"
