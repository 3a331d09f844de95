"""The schema, migrations, the monotonic guard, the sync worker's batch
writer, retention, operator writes and the history read side, against a real
PostgreSQL (a fresh database per test)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from flower_ops.core.errors import InvalidQuery, Unavailable
from flower_ops.core.lifecycle import advances
from flower_ops.core.query import TaskQuery
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.actions import ActionStore, AuditRecord
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.history import PgHistory
from flower_ops.db.migrate import available_migrations, migrate
from flower_ops.db.pool import Database

T0 = 1_700_000_000.0


def ev(task_id: str, state: str, at: float, **fields: Any) -> Transition:
    time_field = {"PENDING": "sent", "RECEIVED": "received", "STARTED": "started",
                  "SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried",
                  "REVOKED": "revoked"}[state]
    return Transition(task_id, state, T0 + at, time_field, fields)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The sync worker's pool (staging tables on every connection), migrated."""
    db = batch_database(database_url, application_name="test-sync-store")
    db.open()
    yield db
    db.close()


@pytest.fixture
def store(database: Database) -> PgExecutionStore:
    return PgExecutionStore(database)


def apply_each(store: PgExecutionStore, *transitions: Transition) -> None:
    """One batch per transition: exercises the SQL guard, not the fold."""
    for t in transitions:
        store.apply(fold([t]).values(), [t])


def row(database_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute("SELECT * FROM automation.job_executions WHERE execution_id = %s",
                           (task_id,))
        names = [d.name for d in cur.description or []]
        values = cur.fetchone()
        assert values is not None, f"no row for {task_id}"
        return dict(zip(names, values, strict=True))


def test_migrations_are_idempotent_and_safe_when_two_processes_start_at_once(
        database_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(database_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # every migration applied exactly once, by whichever process got there first
    assert sorted(v for r in results for v in r) == [
        m.version for m in available_migrations()]
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'automation'")}
    assert {"job_executions", "job_execution_history", "operator_audit",
            "schema_migrations"} <= tables


@pytest.mark.parametrize("order", ["in_order", "sql_out_of_order", "batch_out_of_order"])
def test_late_started_event_never_overwrites_success(store: PgExecutionStore,
                                                      database_url: str, order: str) -> None:
    events = [ev("t1", "PENDING", 0, task_name="automation.add", args=[1, 2], kwargs={}),
              ev("t1", "RECEIVED", 1, worker="w1"), ev("t1", "STARTED", 2, worker="w1"),
              ev("t1", "SUCCESS", 3, worker="w1", result=3, runtime=0.9)]
    if order == "in_order":
        apply_each(store, *events)
    elif order == "sql_out_of_order":
        apply_each(store, events[3], events[1], events[2], events[0])
    else:
        reordered = [events[3], events[2], events[0], events[1]]
        store.apply(fold(reordered).values(), reordered)
    r = row(database_url, "t1")
    assert r["status"] == "success" and r["result"] == 3 and r["runtime"] == 0.9
    assert r["task_name"] == "automation.add" and r["args"] == [1, 2]
    assert r["started_at"].timestamp() == T0 + 2
    assert r["first_seen_at"].timestamp() == T0


def test_replayed_and_duplicated_events_change_nothing(store: PgExecutionStore,
                                                       database_url: str) -> None:
    events = [ev("t2", "PENDING", 0, task_name="x"), ev("t2", "STARTED", 2, worker="w1"),
              ev("t2", "FAILURE", 3, error="ValueError('boom')", traceback="Traceback ...")]
    apply_each(store, *events)
    before = row(database_url, "t2")
    time.sleep(0.05)
    assert store.apply(fold(events).values(), events) == 0
    apply_each(store, *events)
    after = row(database_url, "t2")
    assert after == before  # updated_at included
    assert after["error"] == "ValueError('boom')" and after["traceback"] == "Traceback ..."
    with psycopg.connect(database_url) as conn:
        (count,) = conn.execute("SELECT count(*) FROM automation.job_execution_history "
                                "WHERE execution_id = 't2'").fetchone()  # type: ignore[misc]
    assert count == 3


def test_retry_attempt_advances_the_row_and_late_retry_does_not(
        store: PgExecutionStore, database_url: str) -> None:
    apply_each(store, ev("t3", "RECEIVED", 1, worker="w1"), ev("t3", "STARTED", 2),
               ev("t3", "RETRY", 3, error="Retry in 1s"))
    assert row(database_url, "t3")["status"] == "retry"
    apply_each(store, ev("t3", "STARTED", 5, worker="w2"))
    r = row(database_url, "t3")
    assert r["status"] == "started" and r["worker"] == "w2"
    apply_each(store, ev("t3", "RETRY", 3, error="Retry in 1s"))   # replay of attempt 1
    assert row(database_url, "t3")["status"] == "started"
    apply_each(store, ev("t3", "SUCCESS", 6, result="ok"))
    r = row(database_url, "t3")
    assert r["status"] == "success" and r["error"] is None and r["result"] == "ok"
    # first-seen timestamps stick: started is the first attempt's
    assert r["started_at"].timestamp() == T0 + 2 and r["retried_at"].timestamp() == T0 + 3


def test_first_seen_timestamps_stick(store: PgExecutionStore, database_url: str) -> None:
    apply_each(store, ev("t4", "RECEIVED", 5), ev("t4", "RECEIVED", 7), ev("t4", "RECEIVED", 4))
    assert row(database_url, "t4")["received_at"].timestamp() == T0 + 4


def test_first_seen_is_the_sent_time_once_known(store: PgExecutionStore,
                                                database_url: str) -> None:
    """The client stamps task-sent after publishing, so a fast worker's
    received can read earlier; the row is listed (and ``since`` filters) by
    the sent time the API shows, as memory lists it, whichever came first."""
    apply_each(store, ev("s1", "RECEIVED", 1.0), ev("s1", "PENDING", 1.2))
    fold_first = fold([ev("s2", "RECEIVED", 1.0), ev("s2", "PENDING", 1.2)])["s2"].first_seen
    store.apply(fold([ev("s2", "RECEIVED", 1.0), ev("s2", "PENDING", 1.2)]).values(), [])
    apply_each(store, ev("s3", "STARTED", 3.0), ev("s3", "RECEIVED", 2.0))
    assert row(database_url, "s1")["first_seen_at"].timestamp() == T0 + 1.2
    assert fold_first == T0 + 1.2
    assert row(database_url, "s2")["first_seen_at"].timestamp() == T0 + 1.2
    # without a sent time, the earliest seen
    assert row(database_url, "s3")["first_seen_at"].timestamp() == T0 + 2.0


def test_guard_sql_and_python_agree(database_url: str) -> None:
    statuses = ["pending", "received", "started", "retry", "cancelled", "failure", "success"]
    migrate(database_url)
    with psycopg.connect(database_url) as conn:
        for cur in [None, *statuses]:
            for new in statuses:
                for lost in (False, True):
                    for cur_at, new_at in ((5.0, 4.0), (5.0, 5.0), (5.0, 6.0)):
                        (sql,) = conn.execute(
                            "SELECT automation.status_advances(%s, to_timestamp(%s), %s, %s, "
                            "to_timestamp(%s))", (cur, cur_at, lost, new, new_at)).fetchone()  # type: ignore[misc]
                        assert sql == advances(cur, cur_at, lost, new, new_at), \
                            (cur, cur_at, lost, new, new_at)
    assert advances(None, None, False, "pending", 1.0)
    assert not advances("success", 5.0, False, "started", 9.0)
    assert advances("failure", 5.0, True, "started", 9.0)        # lost, redelivered
    assert not advances("failure", 5.0, True, "started", 4.0)
    assert advances("failure", 5.0, False, "success", 1.0)
    assert not advances("started", 5.0, False, "retry", 4.0)
    assert advances("retry", 5.0, False, "received", 6.0)
    assert all(advances(s, 1.0, False, "success", 0.5) for s in statuses[:-1])


def cancel(actions: ActionStore, task_id: str) -> str:
    """The monitor's cancel of one task, as its row knows it; the status after."""
    with actions.transaction() as tx:
        return tx.mark_cancelled(task_id=task_id, at=time.time(), subject="alice", name=None,
                                 args=None, kwargs=None, args_exact=False, queue=None,
                                 routing_key=None, exchange=None)


def test_operator_writes_cancel_retry_links_and_audit(store: PgExecutionStore,
                                                      database: Database,
                                                      database_url: str) -> None:
    # the operator's writer (the monitor's cancel and retry) beside the sync worker's
    apply_each(store, ev("a", "STARTED", 1, worker="w1"), ev("done", "SUCCESS", 1))
    actions = ActionStore(database)
    assert cancel(actions, "a") == "cancelled"
    assert row(database_url, "a")["status"] == "cancelled"
    cancel(actions, "done")
    assert row(database_url, "done")["status"] == "success"
    with actions.transaction() as tx:
        tx.record_retry(original_id="a", original_state="REVOKED", new_id="b", at=time.time(),
                        subject="alice", name="automation.add", args=[1, {"ü": "x" * 5000}],
                        kwargs={}, queue="celery", routing_key="celery", exchange="")
    a, b = row(database_url, "a"), row(database_url, "b")
    assert a["retried_as"] == "b" and a["status"] == "cancelled"
    assert b["retry_of"] == "a" and b["status"] == "pending" and b["args_exact"]
    assert b["args"] == [1, {"ü": "x" * 5000}]
    assert actions.rows(["b"])["b"].args == [1, {"ü": "x" * 5000}]
    with actions.transaction() as tx:
        tx.audit([AuditRecord(subject="alice", action="cancel", task_id="a", outcome="ok",
                              detail={"terminated": True})])
    with psycopg.connect(database_url) as conn:
        audit = conn.execute("SELECT subject, action, execution_id, outcome, detail FROM "
                             "automation.operator_audit WHERE execution_id = 'a'").fetchall()
    assert audit == [("alice", "cancel", "a", "ok", {"terminated": True})]


def test_cancel_of_a_finished_task_answers_its_final_status(store: PgExecutionStore,
                                                              database: Database) -> None:
    apply_each(store, ev("done", "SUCCESS", 1))
    assert cancel(ActionStore(database), "done") == "success"


# Retention (whole partitions, both modes) and the partition migration:
# tests/test_partitions.py


def test_history_reads_detail_and_lists_with_keyset_pagination_and_filters(
        store: PgExecutionStore, database_url: str) -> None:
    events = []
    for i in range(12):
        name = "automation.add" if i % 2 else "automation.fail"
        events.append(ev(f"id{i:02d}", "PENDING", i, task_name=name, queue="q1" if i < 6 else "q2",
                         args=[i, "needle" if i == 7 else "hay"], kwargs={}))
        events.append(ev(f"id{i:02d}", "SUCCESS" if i % 2 else "FAILURE", i + 0.5, worker="w1",
                         result=i, error=None if i % 2 else "ValueError('boom')"))
    events.append(ev("child", "PENDING", 20, parent_id="id03", task_name="automation.add"))
    store.apply(fold(events).values(), events)
    reader = Database(url=database_url, application_name="test-history")
    history = PgHistory(reader)
    try:
        task = history.get_task("id03")
        assert task is not None
        assert task["state"] == "SUCCESS" and task["source"] == "db"
        assert task["sent"] == T0 + 3 and task["succeeded"] == T0 + 3.5
        assert [h["state"] for h in task["history"]] == ["PENDING", "SUCCESS"]
        assert task["children"] == ["child"]
        assert history.get_task("nope") is None

        seen: list[str] = []
        cursor = None
        while True:
            page = history.list_tasks(TaskQuery(limit=5, cursor=cursor))
            assert page.total == 13
            seen += [t["id"] for t in page.tasks]
            cursor = page.next
            if cursor is None:
                break
        assert seen == ["child"] + [f"id{i:02d}" for i in reversed(range(12))]
        asc = history.list_tasks(TaskQuery(limit=3, order="asc"))
        assert [t["id"] for t in asc.tasks] == ["id00", "id01", "id02"]

        failed = history.list_tasks(TaskQuery(states=frozenset({"FAILURE"}), queue="q2"))
        assert [t["id"] for t in failed.tasks] == ["id10", "id08", "id06"] and failed.total == 3
        assert [t["id"] for t in history.list_tasks(TaskQuery(search="NEEDLE")).tasks] == ["id07"]
        ranged = history.list_tasks(TaskQuery(since=T0 + 2, until=T0 + 4, name="automation.add"))
        assert [t["id"] for t in ranged.tasks] == ["id03"]
        with pytest.raises(InvalidQuery):
            history.list_tasks(TaskQuery(cursor="not-a-cursor"))
    finally:
        reader.close()


def test_history_reports_unavailable_when_database_is_unreachable() -> None:
    from flower_ops.demo.embedded import free_port

    nowhere = Database(url=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                       application_name="test-history", timeout_seconds=1.0)
    try:
        with pytest.raises(Unavailable):
            PgHistory(nowhere).get_task("any")
    finally:
        nowhere.close()
