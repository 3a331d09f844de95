"""The task index over Flower's own event state, fed real Celery event dicts."""
from __future__ import annotations

import pickle
import random

import pytest
from flower.events import EventsState

from flower_ops.core.errors import InvalidQuery
from flower_ops.core.query import TaskQuery
from flower_ops.monitor.sources.flower_state import IndexedEventsState
from flower_ops.monitor.sources.task_index import TaskIndex
from testing.events import T0, feed, task_events


@pytest.fixture
def state() -> EventsState:
    return EventsState(max_tasks_in_memory=100_000)


def test_index_follows_every_state_and_filter(state: EventsState) -> None:
    index = TaskIndex(state)
    finals = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]
    for i in range(70):
        final = finals[i % 7]
        feed(state, task_events(f"t{i}", name=f"job.{i % 2}", final=final, at=T0 + i,
                                worker=f"w{i % 3}@host", queue="fast" if i % 5 == 0 else "celery"))
    index.sync()
    assert len(index) == 70
    assert index.count_by("state") == {s: 10 for s in finals}

    ids, total, cursor = index.query(TaskQuery(states=frozenset({"FAILURE"}), limit=50))
    assert total == 10 and cursor is None
    assert all(state.tasks[i].state == "FAILURE" for i in ids)
    # newest first
    keys = [index.sort_key(i) for i in ids]
    assert keys == sorted(keys, reverse=True)

    ids, total, _ = index.query(TaskQuery(states=frozenset({"FAILURE", "SUCCESS"}),
                                          name="job.0", limit=100))
    expected = {f"t{i}" for i in range(70) if finals[i % 7] in ("FAILURE", "SUCCESS")
                and i % 2 == 0}
    assert set(ids) == expected and total == len(expected)

    ids, total, _ = index.query(TaskQuery(worker="w1@host", queue="fast", limit=100))
    expected = {f"t{i}" for i in range(70) if i % 3 == 1 and i % 5 == 0
                and finals[i % 7] != "PENDING"}
    assert set(ids) == expected and total == len(expected)

    ids, total, _ = index.query(TaskQuery(name="no-such-task"))
    assert ids == [] and total == 0


def test_pagination_with_cursor_visits_every_task_once(state: EventsState) -> None:
    index = TaskIndex(state)
    for i in range(123):
        feed(state, task_events(f"p{i}", name="job", final="SUCCESS", at=T0 + i))
    seen: list[str] = []
    cursor = None
    while True:
        ids, total, cursor = index.query(TaskQuery(limit=20, cursor=cursor))
        assert total == 123
        seen.extend(ids)
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in reversed(range(123))]

    seen = []
    cursor = None
    while True:
        ids, _, cursor = index.query(TaskQuery(limit=50, cursor=cursor, order="asc"))
        seen.extend(ids)
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in range(123)]


def test_time_range_is_half_open(state: EventsState) -> None:
    index = TaskIndex(state)
    for i in range(10):
        feed(state, task_events(f"r{i}", name="job", final="SUCCESS", at=T0 + i * 10))
    ids, total, _ = index.query(TaskQuery(since=T0 + 20, until=T0 + 50, order="asc"))
    assert ids == ["r2", "r3", "r4"] and total == 3


def test_search_matches_args_and_exception(state: EventsState) -> None:
    index = TaskIndex(state)
    feed(state, task_events("s1", name="job", final="FAILURE", at=T0))
    feed(state, task_events("s2", name="job", final="SUCCESS", at=T0 + 1))
    tasks = state.tasks.data

    def matches(uuid: str) -> bool:
        return "boom" in str(getattr(tasks[uuid], "exception", "")).lower()

    ids, total, _ = index.query(TaskQuery(), matches)
    assert ids == ["s1"] and total == 1


def test_candidates_restrict_like_a_filter_whichever_is_walked(state: EventsState) -> None:
    index = TaskIndex(state)
    for i in range(40):
        feed(state, task_events(f"c{i}", name="job", final="FAILURE" if i % 2 else "SUCCESS",
                                at=T0 + i))
    few = {"c3", "c4", "c7", "nope"}  # fewer than the index would walk: walked in order
    ids, total, _ = index.query(TaskQuery(limit=2), candidates=few)
    assert ids == ["c7", "c4"] and total == 3
    ids, total, _ = index.query(TaskQuery(states=frozenset({"FAILURE"})), candidates=few)
    assert ids == ["c7", "c3"] and total == 2
    many = {f"c{i}" for i in range(1, 40)}  # most tasks: checked per task instead
    ids, total, cursor = index.query(TaskQuery(states=frozenset({"SUCCESS"}), limit=5),
                                     candidates=many)
    assert ids == ["c38", "c36", "c34", "c32", "c30"] and total == 19 and cursor
    ids, total, _ = index.query(TaskQuery(limit=1), candidates=many | {"nope"})
    assert ids == ["c39"] and total == 39
    assert index.query(TaskQuery(), candidates=set()) == ([], 0, None)


def test_celery_event_list_is_trimmed_in_chunks_not_per_event() -> None:
    from flower_ops.monitor.sources.flower_state import HEAP_TRIM_FRACTION, attach

    state = EventsState(max_tasks_in_memory=50)
    attach(state)
    TaskIndex(state)
    limit = 50 * state.heap_multiplier
    heap = state._taskheap
    sizes = []
    for i in range(120):
        for event in task_events(f"h{i}", name="job", final="SUCCESS", at=T0 + i):
            state.event(event)
            sizes.append(len(heap))
    assert max(sizes) == limit
    after_full = sizes[sizes.index(limit):]
    # one chunk dropped at once, then the event itself added
    assert min(after_full) == limit - limit // HEAP_TRIM_FRACTION + 1
    assert heap == sorted(heap)  # still time-ordered, the oldest dropped
    newest = [uuid for uuid, _ in state.tasks_by_time(limit=3)]
    assert newest == ["h119", "h118", "h117"]


def test_conjunction_totals_match_a_brute_force_count(state: EventsState) -> None:
    from flower_ops.monitor.sources.flower_state import task_queue, task_worker

    index = TaskIndex(state)
    rng = random.Random(7)
    finals = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "REVOKED"]
    for i in range(1500):
        feed(state, task_events(f"q{i}", name=f"job.{rng.randrange(6)}",
                                final=rng.choice(finals), at=T0 + i,
                                worker=f"w{rng.randrange(4)}@host",
                                queue=rng.choice(["a", "b", "c"])))
    tasks = state.tasks.data
    for _ in range(60):
        states = frozenset(rng.sample(finals, rng.randrange(0, 3)))
        name = rng.choice([None, f"job.{rng.randrange(6)}"])
        worker = rng.choice([None, f"w{rng.randrange(4)}@host", "nobody"])
        queue = rng.choice([None, "a", "b"])
        expected = sum(1 for t in tasks.values()
                       if (not states or t.state in states) and name in (None, t.name)
                       and worker in (None, task_worker(t)) and queue in (None, task_queue(t)))
        query = TaskQuery(states=states, name=name, worker=worker, queue=queue)
        assert index.query(query)[1] == expected
        # the same through the per-task walk (a time range disables set counting)
        ranged = TaskQuery(states=states, name=name, worker=worker, queue=queue, since=T0 - 1)
        assert index.query(ranged)[1] == expected


def test_state_changes_move_tasks_between_buckets(state: EventsState) -> None:
    index = TaskIndex(state)
    events = task_events("m1", name="job", final="SUCCESS", at=T0)
    feed(state, events[:2])
    index.sync()
    assert index.count_by("state") == {"RECEIVED": 1}
    feed(state, events[2:])
    changed = index.sync()
    assert changed == {"m1"}
    assert index.count_by("state") == {"SUCCESS": 1}


def test_late_started_event_does_not_regress_state(state: EventsState) -> None:
    index = TaskIndex(state)
    events = task_events("o1", name="job", final="SUCCESS", at=T0)
    started = events.pop(2)
    feed(state, events)
    feed(state, [started])  # arrives after task-succeeded
    index.sync()
    assert index.count_by("state") == {"SUCCESS": 1}


def test_evicted_tasks_leave_the_index() -> None:
    state = EventsState(max_tasks_in_memory=50)
    index = TaskIndex(state)
    for i in range(80):
        feed(state, task_events(f"e{i}", name="job", final="SUCCESS", at=T0 + i))
        if i % 7 == 0:
            index.sync()
    index.sync()
    assert len(index) == len(state.tasks) == 50
    ids, total, _ = index.query(TaskQuery(limit=1000))
    assert total == 50 and set(ids) == set(state.tasks.data.keys())


def test_random_events_keep_index_equal_to_a_full_scan(state: EventsState) -> None:
    index = TaskIndex(state)
    rng = random.Random(7)
    finals = ["PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]
    all_events = []
    for i in range(400):
        all_events.extend(task_events(f"x{i}", name=rng.choice(["a", "b", "c"]),
                                      final=rng.choice(finals), at=T0 + rng.random() * 100,
                                      worker=rng.choice(["w1", "w2"]),
                                      queue=rng.choice(["q1", "q2"])))
    rng.shuffle(all_events)
    for n, event in enumerate(all_events):
        state.event(event)
        if n % 97 == 0:
            index.sync()
    index.sync()
    for wanted in finals:
        scan = {u for u, t in state.tasks.data.items() if t.state == wanted}
        ids, total, _ = index.query(TaskQuery(states=frozenset({wanted}), limit=1000))
        assert set(ids) == scan and total == len(scan), wanted


def test_bad_cursor_is_invalid_query(state: EventsState) -> None:
    index = TaskIndex(state)
    for cursor in ("abc", "-5", str(1 << 90)):
        with pytest.raises(InvalidQuery):
            index.query(TaskQuery(cursor=cursor))


def test_indexed_state_pickles_as_flowers_own_class(state: EventsState) -> None:
    TaskIndex(state)
    feed(state, task_events("k1", name="job", final="SUCCESS", at=T0))
    assert isinstance(state, IndexedEventsState)
    restored = pickle.loads(pickle.dumps(state))
    assert type(restored) is EventsState
    assert restored.tasks["k1"].state == "SUCCESS"


def test_tasks_already_in_state_are_indexed_on_first_sync(state: EventsState) -> None:
    feed(state, task_events("pre1", name="job", final="FAILURE", at=T0))
    index = TaskIndex(state)
    index.sync()
    assert index.count_by("state") == {"FAILURE": 1}
