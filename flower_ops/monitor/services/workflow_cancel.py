"""``POST /workflows/{root_id}/cancel``: stop a workflow.

Every node that has not ended: the published ones go through the task
cancel (``services/cancellation.py``: answered with what happened), the
steps not sent yet have their ids revoked before they are (markers and the
broadcast), their rows written cancelled and audited.
"""
from __future__ import annotations

import time
from typing import Any

from flower_ops.core.errors import Conflict
from flower_ops.core.lifecycle import FINAL_STATES
from flower_ops.db.actions import AuditRecord
from flower_ops.monitor.services.workflow_actions import WorkflowActions


class WorkflowCancel:
    """Cancel every node of a workflow that has not finished: the published
    ones as ``POST /tasks/cancel`` does (answered with what happened), the
    steps not published yet by revoking their ids before they are sent
    (markers and broadcast: a worker receiving one discards it), their rows
    written cancelled and audited."""

    def __init__(self, actions: WorkflowActions) -> None:
        self.owner = actions

    async def cancel(self, some_id: str, *, subject: str, dry_run: bool) -> dict[str, Any]:
        owner = self.owner
        workflow_id, _, tree = await owner._state(some_id)
        open_nodes = [n for n in tree["nodes"] if n["state"] not in FINAL_STATES]
        published = [n["task_id"] for n in open_nodes if n["published"]]
        planned = [n for n in open_nodes if not n["published"]]
        if not open_nodes:
            raise Conflict("nothing to cancel: every step has ended",
                           {"root_id": workflow_id, "state": tree["state"],
                            "reason": "workflow_ended"})
        if dry_run:
            report = await owner.actions.run("cancel", published, subject=subject,
                                             dry_run=True) if published else {"results": []}
            results = report["results"] + [
                {"id": n["task_id"], "outcome": "would_cancel", "state": "PENDING",
                 "name": n["name"], "published": False} for n in planned]
            return _cancel_answer(workflow_id, True, results, owner.actions.audit.where)
        results = []
        if planned:
            results += await owner.actions._run_blocking(
                self._revoke_planned, workflow_id, planned, subject)
        if published:
            report = await owner.actions.run("cancel", published, subject=subject)
            results += report["results"]
        return _cancel_answer(workflow_id, False, results, owner.actions.audit.where)

    def _revoke_planned(self, workflow_id: str, planned: list[dict[str, Any]],
                        subject: str) -> list[dict[str, Any]]:
        actions = self.owner.actions
        ids = [n["task_id"] for n in planned]
        actions.gateway.revoke(ids)
        at = time.time()
        with actions._transaction() as tx:
            for node in planned:
                if tx is not None:
                    tx.mark_cancelled(task_id=node["task_id"], at=at, subject=subject,
                                      name=node["name"], args=None, kwargs=None,
                                      args_exact=False, queue=None, routing_key=None,
                                      exchange=None)
            actions.audit.within(tx, [AuditRecord(subject, "cancel", n["task_id"], "cancelled",
                                                  {"workflow": workflow_id,
                                                   "reason": "not_published",
                                                   "previous_state": "PENDING"})
                                      for n in planned])
        return [{"id": n["task_id"], "outcome": "cancelled", "state": "REVOKED",
                 "previous_state": "PENDING", "name": n["name"], "published": False}
                for n in planned]


def _cancel_answer(workflow_id: str, dry_run: bool, results: list[dict[str, Any]],
                   audit: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    return {"root_id": workflow_id, "dry_run": dry_run, "counts": counts,
            "results": results, "audit": audit}
