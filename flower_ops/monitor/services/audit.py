"""Who did what to which task, and what came of it: the audit trail of
operator actions (``automation.operator_audit``, or the log without a
database). Blocking: call it on the executor."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from flower_ops.core.errors import Unavailable
from flower_ops.core.outcomes import UNAVAILABLE
from flower_ops.db.actions import ActionStore, ActionTransaction, AuditRecord

logger = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, store: ActionStore | None) -> None:
        self.store = store

    @property
    def where(self) -> str:
        """Where records go, as the answers say it: ``database`` or ``log``."""
        return "database" if self.store is not None else "log"

    def within(self, tx: ActionTransaction | None, records: Sequence[AuditRecord]) -> None:
        """Records that commit (or not) with the action's own writes."""
        if tx is not None:
            tx.audit(records)
        else:
            _log(records)

    def best_effort(self, records: Sequence[AuditRecord]) -> None:
        """Records of their own: a database that fails now is logged, not raised."""
        if not records:
            return
        if self.store is None:
            _log(records)
            return
        try:
            self.store.audit(records)
        except Exception:
            logger.warning("could not write %d audit record(s)", len(records), exc_info=True)
            _log(records)

    def failed(self, subject: str, action: str, task_ids: Iterable[str],
               error: Unavailable) -> None:
        self.best_effort([AuditRecord(subject, action, task_id, UNAVAILABLE,
                                      {"reason": error.message, "detail": error.detail})
                          for task_id in task_ids])


def _log(records: Sequence[AuditRecord]) -> None:
    for r in records:
        detail: Any = r.detail
        logger.info("audit: %s %s %s -> %s %s", r.subject, r.action, r.task_id, r.outcome,
                    detail)
