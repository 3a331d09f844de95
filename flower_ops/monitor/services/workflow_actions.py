"""``POST /workflows/{root_id}/retry`` and ``/cancel``: resume a workflow from
the steps that failed, or stop it.

Resume sends each failed step again (a new task id, its exact arguments)
with the links it was first sent with, so what came after it runs:

- a chain step: with its continuation (the steps not run, each with a new
  id), its callbacks and errbacks;
- a group member: with its group id and index (and links);
- a chord's failed members, once every member has ended and the body has
  not run: a new chord group whose counter in the Redis result backend is
  set up with the results of the members that succeeded, so when the
  retried members succeed Celery runs the body once, with every member's
  result in order;
- any other task of the workflow: as a plain retry.

The new messages carry the workflow id and which task each new id stands in
for (``core/canvas.py``), so the tree links old and new. Where Celery cannot
resume safely (arguments or links not captured exactly, a continuation
into a group or chord, a chord still running, a result backend with no
chord counter we can set) the answer is a 409 naming each reason, and
nothing is sent. Each resumed step is audited (action ``retry``).
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from celery import states

from flower_ops.core.canvas import RESUMES_HEADER, WORKFLOW_FIELD, is_simple, signature_id
from flower_ops.core.errors import Conflict, NotFound
from flower_ops.core.lifecycle import FINAL_STATES
from flower_ops.core.outcomes import RETRIED
from flower_ops.core.workflow import build_tree
from flower_ops.db.actions import AuditRecord
from flower_ops.monitor.services.action_lookup import TaskSnapshot
from flower_ops.monitor.services.actions import TaskActionService
from flower_ops.monitor.services.workflows import WorkflowService


class WorkflowActions:
    def __init__(self, *, workflows: WorkflowService, actions: TaskActionService,
                 capp: Any) -> None:
        self.workflows = workflows
        self.actions = actions
        self.capp = capp

    async def _state(self, some_id: str) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
        workflow_id = await self.workflows.resolve(some_id)
        records, _ = await self.workflows.records(workflow_id, full_canvas=True)
        tree = build_tree(workflow_id, records)
        return workflow_id, {r["id"]: r for r in records}, tree

    # -- retry: resume ---------------------------------------------------------------

    async def retry(self, some_id: str, *, subject: str, dry_run: bool) -> dict[str, Any]:
        workflow_id, records, tree = await self._state(some_id)
        failed = [n for n in tree["nodes"] if n["state"] == "FAILURE" and n["published"]
                  and not n.get("retried_as") and n["task_id"] in records]
        if not failed:
            raise Conflict("nothing to resume: no failed step that has not been retried",
                           {"root_id": workflow_id, "state": tree["state"],
                            "reason": "nothing_failed"})
        snapshots = await self.actions.lookup.snapshots([n["task_id"] for n in failed],
                                                        need_exact_args=True)
        plans, refusals = self._plan(workflow_id, failed, records, tree, snapshots)
        if refusals:
            raise Conflict("Celery cannot resume this workflow safely; nothing was sent",
                           {"root_id": workflow_id, "reasons": refusals})
        if dry_run:
            return {"root_id": workflow_id, "dry_run": True,
                    "resumed": [_described(p, "would_retry") for p in plans]}
        done = await self.actions._run_blocking(self._send, workflow_id, plans, subject)
        return {"root_id": workflow_id, "dry_run": False, "resumed": done,
                "audit": self.actions.audit.where}

    async def retry_task(self, task_id: str, *, subject: str, force: bool) -> dict[str, Any]:
        """``POST /tasks/{task_id}/retry``: a failed step of a workflow is
        resumed (sent with its continuation, as the workflow's retry does for
        it); any other task, or a step that cannot be resumed safely, is
        retried alone, and ``resume`` says which and why."""
        resumed, workflow_id, reason = await self._resume_one(task_id, subject, force)
        if resumed is not None:
            return resumed
        answer = await self.actions.retry(task_id, subject=subject, force=force)
        return {**answer, "resume": {"outcome": "alone", "workflow_id": workflow_id,
                                     "kind": None, "continuation": [], "reason": reason}}

    async def _resume_one(self, task_id: str, subject: str, force: bool
                          ) -> tuple[dict[str, Any] | None, str | None, str | None]:
        try:
            workflow_id, records, tree = await self._state(task_id)
        except NotFound:
            return None, None, None
        node = next((n for n in tree["nodes"] if n["task_id"] == task_id), None)
        if node is None or node["state"] != "FAILURE" or node.get("retried_as") \
                or task_id not in records:
            return None, workflow_id, None
        snapshots = await self.actions.lookup.snapshots([task_id], need_exact_args=True)
        decision = self.actions.lookup.decide("retry", task_id, snapshots.get(task_id), force)
        if decision.outcome != "allowed":
            return None, workflow_id, None     # the task retry's own answer (409...)
        plans, refusals = self._plan(workflow_id, [node], records, tree, snapshots)
        if refusals:
            return None, workflow_id, str(refusals[0]["reason"])
        [plan] = plans
        await self.actions._run_blocking(self._send, workflow_id, plans, subject)
        snap, new_id, _ = next(m for m in plan["members"] if m[0].id == task_id)
        return ({"id": task_id, "outcome": RETRIED, "state": snap.state,
                 "previous_state": snap.state, "new_id": new_id, "new_state": "PENDING",
                 "retried_as": new_id, "name": snap.name, "queue": snap.queue,
                 "audit": self.actions.audit.where,
                 "resume": {"outcome": "resumed", "workflow_id": workflow_id,
                            "kind": plan["kind"], "continuation": plan["continuation"],
                            "reason": None}}, workflow_id, None)

    def _plan(self, workflow_id: str, failed: list[dict[str, Any]],
              records: dict[str, dict[str, Any]], tree: dict[str, Any],
              snapshots: dict[str, TaskSnapshot]) -> tuple[list[dict[str, Any]], list[Any]]:
        plans: list[dict[str, Any]] = []
        refusals: list[dict[str, Any]] = []
        chords: dict[str, list[dict[str, Any]]] = {}
        for node in failed:
            task_id = node["task_id"]
            snap = snapshots.get(task_id)
            canvas = records[task_id].get("canvas") or {}
            reason = _unsafe(snap, canvas)
            if reason is not None:
                refusals.append({"task_id": task_id, "reason": reason})
                continue
            assert snap is not None
            if canvas.get("chord"):
                chords.setdefault(str(canvas.get("group")), []).append(node)
                continue
            plans.append(self._step_plan(workflow_id, snap, records[task_id], canvas))
        for group_id, members in chords.items():
            plan = self._chord_plan(workflow_id, group_id, members, records, tree, snapshots)
            (refusals if "reason" in plan else plans).append(plan)
        return plans, refusals

    def _step_plan(self, workflow_id: str, snap: TaskSnapshot, record: dict[str, Any],
                   canvas: dict[str, Any]) -> dict[str, Any]:
        new_id = str(uuid.uuid4())
        resumes = {new_id: snap.id}
        links: dict[str, Any] = {"root_id": record.get("root_id"),
                                 "parent_id": record.get("parent_id")}
        continuation = []
        if canvas.get("chain"):
            steps = []
            for signature in canvas["chain"]:
                fresh = str(uuid.uuid4())
                old = signature_id(signature)
                if old:
                    resumes[fresh] = old
                continuation.append({"task_id": old, "new_id": fresh,
                                     "name": signature.get("task")})
                steps.append({**signature, "options": {**(signature.get("options") or {}),
                                                       "task_id": fresh}})
            links["chain"] = list(reversed(steps))   # Celery pops the next from the end
        for key, option in (("callbacks", "link"), ("errbacks", "link_error")):
            if canvas.get(key):
                links[option] = canvas[key]
        if canvas.get("group"):
            links["group_id"] = canvas["group"]
            links["group_index"] = canvas.get("group_index")
        links["headers"] = {WORKFLOW_FIELD: workflow_id, RESUMES_HEADER: resumes}
        kind = "chain" if canvas.get("chain") else "group" if canvas.get("group") else "task"
        return {"kind": kind, "members": [(snap, new_id, links)],
                "continuation": continuation}

    def _chord_plan(self, workflow_id: str, group_id: str, failed: list[dict[str, Any]],
                    records: dict[str, dict[str, Any]], tree: dict[str, Any],
                    snapshots: dict[str, TaskSnapshot]) -> dict[str, Any]:
        members = [r for r in records.values() if (r.get("canvas") or {}).get("group") ==
                   group_id and (r.get("canvas") or {}).get("chord")]
        first = failed[0]["task_id"]
        body = (records[first].get("canvas") or {})["chord"]
        body_id = signature_id(body)
        nodes = {n["task_id"]: n for n in tree["nodes"]}
        if any(m["state"] not in FINAL_STATES for m in members):
            return {"task_id": first, "reason": "the chord's header is still running: "
                    "retry once every member has ended"}
        if body_id in nodes and nodes[body_id]["published"]:
            return {"task_id": first, "reason": "the chord's body already ran"}
        still_failed = {n["task_id"] for n in tree["nodes"] if n["task_id"] in
                        {m["id"] for m in members} and n["state"] == "FAILURE"
                        and not n.get("retried_as")}
        if still_failed - {n["task_id"] for n in failed}:
            return {"task_id": first, "reason": "other members of the chord failed too: "
                    "POST /workflows/{root_id}/retry resumes them together, so the body "
                    "runs once with every result"}
        backend = self.capp.backend
        if not (hasattr(backend, "get_key_for_group") and hasattr(backend, "client")
                and getattr(backend, "_chord_zset", False)):
            return {"task_id": first, "reason": "the result backend "
                    f"({type(backend).__name__}) keeps no chord counter Flower Ops can set "
                    "up again; only Redis's can be"}
        size = body.get("chord_size") or len(members)
        if len(members) != size:
            return {"task_id": first, "reason": f"{len(members)} of the chord's {size} "
                    "members are known: the others' results cannot be given to the body"}
        new_group, new_body = str(uuid.uuid4()), str(uuid.uuid4())
        resumes = {new_body: body_id} if body_id else {}
        body2 = {**body, "options": {**(body.get("options") or {}), "task_id": new_body,
                                     "group_id": new_group}}
        sends = []
        for node in failed:
            snap = snapshots[node["task_id"]]
            canvas = records[node["task_id"]].get("canvas") or {}
            new_id = str(uuid.uuid4())
            resumes[new_id] = snap.id
            sends.append((snap, new_id, {
                "group_id": new_group, "group_index": canvas.get("group_index"),
                "chord": body2, "root_id": records[node["task_id"]].get("root_id"),
                "parent_id": records[node["task_id"]].get("parent_id")}))
        for _, _, links in sends:
            links["headers"] = {WORKFLOW_FIELD: workflow_id, RESUMES_HEADER: resumes}
        kept = [m for m in members if m["state"] == "SUCCESS"]
        return {"kind": "chord", "members": sends, "group_id": new_group, "size": size,
                "kept": [(m["id"], (m.get("canvas") or {}).get("group_index")) for m in kept],
                "continuation": [{"task_id": body_id, "new_id": new_body,
                                  "name": body.get("task")}]}

    def _send(self, workflow_id: str, plans: list[dict[str, Any]], subject: str
              ) -> list[dict[str, Any]]:
        out = []
        with self.actions.gateway.connection() as conn:
            for plan in plans:
                if plan["kind"] == "chord":
                    self._restore_chord_counter(plan)
                for snap, new_id, links in plan["members"]:
                    self._resend(workflow_id, snap, new_id, links, plan, subject, conn)
                out.append(_described(plan, RETRIED))
        return out

    def _resend(self, workflow_id: str, snap: TaskSnapshot, new_id: str,
                links: dict[str, Any], plan: dict[str, Any], subject: str, conn: Any) -> None:
        at = time.time()
        args, kwargs = list(snap.args or []), dict(snap.kwargs or {})
        assert snap.name is not None
        with self.actions._transaction() as tx:
            if tx is not None:
                tx.record_retry(original_id=snap.id, original_state=snap.state, new_id=new_id,
                                at=at, subject=subject, name=snap.name, args=args,
                                kwargs=kwargs, queue=snap.queue, routing_key=snap.routing_key,
                                exchange=snap.exchange)
            self.actions.audit.within(tx, [AuditRecord(subject, "retry", snap.id, RETRIED, {
                "new_id": new_id, "previous_state": snap.state, "workflow": workflow_id,
                "resume": plan["kind"],
                "continuation": [c["new_id"] for c in plan.get("continuation", ())]})])
            self.actions.gateway.publish(conn, snap, new_id, args, kwargs,
                                         {k: v for k, v in links.items() if v is not None})
        self.actions.lookup.remember_retry(snap.id, new_id)

    def _restore_chord_counter(self, plan: dict[str, Any]) -> None:
        """The new chord group's counter in Redis, as Celery's ``apply_chord``
        and ``on_chord_part_return`` keep it: the size, and each member that
        succeeded with its result at its index."""
        backend = self.capp.backend
        group_id = plan["group_id"]
        jkey = backend.get_key_for_group(group_id, ".j")
        skey = backend.get_key_for_group(group_id, ".s")
        with backend.client.pipeline() as pipe:
            for task_id, index in plan["kept"]:
                result = self.capp.AsyncResult(task_id).result
                encoded = backend.encode([1, task_id, states.SUCCESS,
                                          backend.encode_result(result, states.SUCCESS)])
                pipe.zadd(jkey, {encoded: index if index is not None else 0})
            pipe.set(skey, plan["size"])
            if backend.expires:
                pipe.expire(jkey, backend.expires).expire(skey, backend.expires)
            pipe.execute()


def _unsafe(snap: TaskSnapshot | None, canvas: dict[str, Any]) -> str | None:
    if snap is None:
        return "the task is no longer known (memory or PostgreSQL)"
    if not snap.args_exact:
        return "its arguments were not captured exactly"
    linked = any(canvas.get(k) for k in ("chain", "callbacks", "errbacks", "chord"))
    if linked and canvas.get("exact") is False:
        return "the steps after it were not captured exactly (arguments not JSON)"
    if any(not is_simple(s) for s in canvas.get("chain") or ()):
        return ("the chain continues into a group or chord, whose task ids Celery has "
                "already marked failed: resuming it would reuse them")
    return None


def _described(plan: dict[str, Any], outcome: str) -> dict[str, Any]:
    return {"kind": plan["kind"], "outcome": outcome,
            "tasks": [{"task_id": snap.id, "new_id": new_id, "name": snap.name}
                      for snap, new_id, _ in plan["members"]],
            "continuation": plan.get("continuation", [])}
