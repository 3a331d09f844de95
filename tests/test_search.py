"""``search=``: the chunked text scan finds exactly what a per-task substring
test finds, while tasks change, arrive and are evicted."""
from __future__ import annotations

import random

import pytest
from flower.events import EventsState

from flower_ops.monitor.services import search
from flower_ops.monitor.services.search import SearchTexts, search_text
from flower_ops.monitor.sources.task_index import TaskIndex
from testing.events import T0, feed, task_events


@pytest.mark.parametrize("chunk_tasks", [1, 7, 1024])
def test_search_matches_a_per_task_scan_through_changes_and_eviction(
        monkeypatch: pytest.MonkeyPatch, chunk_tasks: int) -> None:
    monkeypatch.setattr(search, "CHUNK_TASKS", chunk_tasks)
    state = EventsState(max_tasks_in_memory=60)
    index = TaskIndex(state)
    texts = SearchTexts(lambda: state.tasks.data)
    index.change_listeners.append(texts.invalidate)
    rng = random.Random(5)
    needles = ["boom", "JOB.3", "s1", "(1, 2)", "valueerror('boom')", "zzz", "3\x001"]
    finals = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]
    for step in range(25):
        for n in range(rng.randrange(1, 12)):
            uuid = f"s{step}-{n}" if rng.random() < 0.8 else f"s{rng.randrange(step + 1)}-0"
            feed(state, task_events(uuid, name=f"job.{rng.randrange(5)}",
                                    final=rng.choice(finals), at=T0 + step + n / 100))
        index.sync()
        tasks = state.tasks.data
        for needle in needles:
            expected = {u for u, t in tasks.items() if needle.lower() in search_text(t)}
            assert texts.matching(needle) == expected, (step, needle)
