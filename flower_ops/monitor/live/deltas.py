"""One flush of the live feed: the ids that changed, for the messages of
mode ``all`` and the replay buffer (``feed.py``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flower_ops.monitor.live.filters import Filters
from flower_ops.monitor.live.snapshots import shown, task_time
from flower_ops.monitor.services.tasks import SummaryCache


@dataclass
class Delta:
    """One flush: the ids that changed. Their summaries are built when a
    message needs them (an all-mode client now, or a replay later, then in
    their latest state), not for the replay buffer."""
    seq: int
    time: str           # ISO 8601 UTC (core/times.py)
    ids: list[str]
    removed: list[str]
    prev_states: dict[str, str | None]
    tasks: list[dict[str, Any]] | None = None
    gone: list[str] = field(default_factory=list)
    encoded: dict[Filters, bytes] = field(default_factory=dict)

    def forget(self) -> None:
        self.tasks = None
        self.gone = []
        self.encoded = {}

    def tasks_now(self, data: Mapping[str, Any], summaries: SummaryCache
                  ) -> list[dict[str, Any]]:
        """The tasks as they are now, oldest first (built once per flush or
        replay); ids Flower's memory dropped since go to ``gone``."""
        if self.tasks is None:
            tasks = []
            for uuid in self.ids:
                task = data.get(uuid)
                if task is None:
                    self.gone.append(uuid)
                else:
                    tasks.append(shown(summaries.get(uuid, task)))
            tasks.sort(key=task_time)
            self.tasks = tasks
        return self.tasks
