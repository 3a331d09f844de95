"""What the monitor can see of the user's Celery app, and what is missing.

Without ``flower_ops.instrument(app)`` the monitor still works with what
Celery sends; ``/stats`` says what that costs (SPEC §1). Learned from the
events themselves, on the IOLoop thread (an index observer).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flower_ops.monitor.sources.flower_state import task_has_exact_arguments


class Capabilities:
    def __init__(self, *, history_configured: bool,
                 probed: Mapping[str, dict[str, Any]]) -> None:
        self.sent_events = False
        self.exact_args = False
        self.history_configured = history_configured
        # replies to our worker command: only instrumented workers answer it
        self._probed = probed

    def observe(self, uuid: str, old_state: str | None, task: Any) -> None:
        """Index observer: a task changed state (first seen when ``old_state`` is None).

        Every change is looked at until each capability is seen: the exact
        arguments come with ``task-sent``, which may be applied after the
        worker's first event."""
        if not self.sent_events and getattr(task, "sent", None):
            self.sent_events = True
        if not self.exact_args and task_has_exact_arguments(task):
            self.exact_args = True

    def summary(self) -> dict[str, Any]:
        missing = []
        if not self.sent_events:
            missing.append("task-sent events (task_send_sent_event): PENDING tasks and queue "
                           "names are unknown until a worker receives them")
        if not self.exact_args:
            missing.append("exact arguments (flower_ops.instrument(app) in the publisher): "
                           "args are Celery's truncated repr, retry needs the result backend")
        return {"sent_events": self.sent_events, "exact_args": self.exact_args,
                "instrumented_workers": bool(self._probed), "history": self.history_configured,
                "missing": missing}
