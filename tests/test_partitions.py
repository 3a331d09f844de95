"""Partitioned history (issue #14, part 1) against a real PostgreSQL: the
partitions created ahead, the day a written row goes to, retention by whole
partition in both modes, cheap listing totals. The in-place migration of
today's unpartitioned tables, with a real sync worker moving rows while
writes go on: tests/test_partition_migration.py."""
from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from flower_ops.core.env import ConfigError
from flower_ops.core.query import TaskQuery
from flower_ops.core.transitions import Transition, fold
from flower_ops.db.actions import ActionStore
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.history import PgHistory
from flower_ops.db.listing import count_rows
from flower_ops.db.partitions import create_partition, ensure_ahead, partitions
from flower_ops.db.pool import Database
from flower_ops.db.retention import Retention
from sync_worker.config import SyncWorkerConfig
from testing.partitions import midday_epoch, partition_names, today_utc

EXECUTIONS = "automation.job_executions"
HISTORY = "automation.job_execution_history"


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = batch_database(database_url, application_name="test-partitions")
    db.open()
    yield db
    db.close()


@pytest.fixture
def store(database: Database) -> PgExecutionStore:
    return PgExecutionStore(database)


def apply(store: PgExecutionStore, task_id: str, state: str, at: float, **fields: Any) -> None:
    time_field = {"PENDING": "sent", "STARTED": "started", "SUCCESS": "succeeded"}[state]
    t = Transition(task_id, state, at, time_field, fields)
    store.apply(fold([t]).values(), [t])


def rows(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


def day_of(database_url: str, task_id: str) -> list[date]:
    return [r[0] for r in rows(database_url, f"SELECT first_seen_day FROM {EXECUTIONS} "
                                             "WHERE execution_id = %s", task_id)]


def test_every_process_starts_with_todays_and_tomorrows_partitions_and_no_legacy(
        database: Database, database_url: str) -> None:
    today = today_utc()
    for table in (EXECUTIONS, HISTORY):
        bare = table.split(".")[1]
        assert partition_names(database_url, table) == [
            f"{bare}_p{today:%Y%m%d}", f"{bare}_p{today + timedelta(days=1):%Y%m%d}"]
    # keys hold the partition key (a distribution column for Citus, too)
    keys = dict(rows(database_url, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) "
                                   "FROM pg_constraint WHERE contype IN ('p', 'u') "
                                   "AND conrelid IN (%s::regclass, %s::regclass)",
                     EXECUTIONS, HISTORY))
    assert keys == {EXECUTIONS: "PRIMARY KEY (execution_id, first_seen_day)",
                    HISTORY: "UNIQUE (execution_id, first_seen_day, state, occurred_at)"}
    assert rows(database_url, "SELECT count(*) FROM pg_namespace "
                              "WHERE nspname = 'automation_archive'") == [(1,)]


def test_partitions_ahead_are_created_once_whatever_the_size_and_concurrency(
        database: Database, database_url: str) -> None:
    today = today_utc()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                ensure_ahead(conn, days_ahead=20, partition_days=7)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with psycopg.connect(database_url) as conn:
        for table in (EXECUTIONS, HISTORY):
            found = partitions(conn, table)
            ranges = [(p.from_day, p.to_day) for p in found]
            # contiguous, no overlap: the two daily ones, then 7-day ranges cut to fit
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            assert ranges[0][0] == today and ranges[-1][1] > today + timedelta(days=20)
            assert ranges[:2] == [(today, today + timedelta(days=1)),
                                  (today + timedelta(days=1), today + timedelta(days=2))]
            assert all((b - a).days <= 7 for a, b in ranges)
            assert all((p.from_day - date(1970, 1, 1)).days % 7 == 0 for p in found[3:])
        # again: nothing to do
        assert ensure_ahead(conn, days_ahead=20, partition_days=7) == []


def test_a_row_keeps_its_day_and_outliers_go_to_the_nearest_partition(
        store: PgExecutionStore, database_url: str) -> None:
    today = today_utc()
    yesterday = today - timedelta(days=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_partition(conn, yesterday, 1)
    apply(store, "t1", "PENDING", midday_epoch(yesterday), task_name="job")
    assert day_of(database_url, "t1") == [yesterday]
    # later events (today), and an earlier first timestamp (a day with no
    # partition): the same one row, in yesterday's partition
    apply(store, "t1", "STARTED", midday_epoch(today), worker="w1")
    apply(store, "t1", "PENDING", midday_epoch(yesterday) - 86400 * 3, task_name="job")
    apply(store, "t1", "SUCCESS", midday_epoch(today) + 5, result=1)
    found = rows(database_url, f"SELECT status, first_seen_day, first_seen_at FROM {EXECUTIONS} "
                               "WHERE execution_id = 't1'")
    assert [(r[0], r[1]) for r in found] == [("success", yesterday)]
    assert found[0][2].timestamp() == midday_epoch(yesterday) - 86400 * 3
    history = rows(database_url, f"SELECT state, first_seen_day FROM {HISTORY} "
                                 "WHERE execution_id = 't1' ORDER BY occurred_at")
    assert history == [("PENDING", yesterday), ("PENDING", yesterday),
                       ("STARTED", yesterday), ("SUCCESS", yesterday)]
    # outliers: never a failed batch
    apply(store, "ancient", "PENDING", 946_684_800.0)          # 2000-01-01
    apply(store, "future", "PENDING", 4_102_444_800.0)         # 2100-01-01
    assert day_of(database_url, "ancient") == [yesterday]
    assert day_of(database_url, "future") == [today + timedelta(days=1)]


def test_operator_writes_find_a_row_in_an_older_partition(
        store: PgExecutionStore, database: Database, database_url: str) -> None:
    old = today_utc() - timedelta(days=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_partition(conn, old, 1)
    apply(store, "a", "STARTED", midday_epoch(old), worker="w1")
    actions = ActionStore(database)
    with actions.transaction() as tx:
        assert tx.mark_cancelled(task_id="a", at=midday_epoch(old) + 60, subject="alice",
                                 name=None, args=None, kwargs=None, args_exact=False,
                                 queue=None, routing_key=None, exchange=None) == "cancelled"
    with actions.transaction() as tx:
        tx.record_retry(original_id="a", original_state="REVOKED", new_id="b",
                        at=midday_epoch(today_utc()), subject="alice", name="job", args=[1],
                        kwargs={}, queue="celery", routing_key="celery", exchange="")
    found = rows(database_url, f"SELECT execution_id, status, retried_as, retry_of, "
                               f"first_seen_day FROM {EXECUTIONS} ORDER BY 1")
    assert found == [("a", "cancelled", "b", None, old),
                     ("b", "pending", None, "a", today_utc())]
    task = PgHistory(database).get_task("a")
    assert task is not None
    assert [h["state"] for h in task["history"]] == ["STARTED", "REVOKED"]


def old_tasks(store: PgExecutionStore, database_url: str, days_ago: list[int]) -> None:
    """Two finished tasks (with history) on each of those days, and their partitions."""
    today = today_utc()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n in days_ago:
            create_partition(conn, today - timedelta(days=n), 1)
    for n in days_ago:
        at = midday_epoch(today - timedelta(days=n))
        for i in range(2):
            apply(store, f"d{n}-{i}", "PENDING", at, task_name="job")
            apply(store, f"d{n}-{i}", "SUCCESS", at + 1, result=i)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"ANALYZE {EXECUTIONS}")


@pytest.mark.parametrize("archive", [False, True])
def test_retention_detaches_whole_partitions_older_than_the_cutoff(
        store: PgExecutionStore, database: Database, database_url: str, archive: bool) -> None:
    today = today_utc()
    old_tasks(store, database_url, [40, 31, 29, 0])
    retention = Retention(database)
    # cutoff: 30 days ago at 06:00; day -31 ends before it, day -30 does not
    cutoff = midday_epoch(today - timedelta(days=30)) - 6 * 3600
    report = retention.retire_partitions(cutoff_epoch=cutoff, archive=archive)
    gone = [f"p{today - timedelta(days=n):%Y%m%d}" for n in (40, 31)]
    expected = [f"{table}_{p}" for p in gone for table in ("job_executions",
                                                           "job_execution_history")]
    assert sorted(r.name.split(".")[-1] for r in report.retired) == sorted(expected)
    assert report.skipped == []
    assert report.rows_estimate == 4
    left = rows(database_url, f"SELECT execution_id FROM {EXECUTIONS} ORDER BY 1")
    assert left == [("d0-0",), ("d0-1",), ("d29-0",), ("d29-1",)]
    assert rows(database_url, f"SELECT DISTINCT execution_id FROM {HISTORY} ORDER BY 1") == left
    archived = {r[0] for r in rows(database_url, "SELECT tablename FROM pg_tables "
                                                 "WHERE schemaname = 'automation_archive'")}
    if archive:
        assert archived == set(expected)
        table = f"automation_archive.job_executions_{gone[0]}"
        assert rows(database_url, f"SELECT execution_id, status FROM {table} ORDER BY 1") == [
            ("d40-0", "success"), ("d40-1", "success")]
        assert rows(database_url, f"SELECT count(*) FROM automation_archive."
                                  f"job_execution_history_{gone[0]}") == [(4,)]
    else:
        assert archived == set()
    # the next pass finds nothing more
    assert retention.retire_partitions(cutoff_epoch=cutoff, archive=archive).retired == []


def test_retention_leaves_a_partition_it_cannot_lock_for_the_next_pass(
        store: PgExecutionStore, database: Database, database_url: str) -> None:
    old_tasks(store, database_url, [40])
    retention = Retention(database)
    cutoff = midday_epoch(today_utc() - timedelta(days=30))
    with psycopg.connect(database_url) as reader:    # a long read holds the table
        reader.execute(f"SELECT count(*) FROM {EXECUTIONS}").fetchone()
        report = retention.retire_partitions(cutoff_epoch=cutoff)
        assert report.retired == [] and len(report.skipped) == 1
        assert len(rows(database_url, f"SELECT 1 FROM {EXECUTIONS}")) == 2
    report = retention.retire_partitions(cutoff_epoch=cutoff)
    assert len(report.retired) == 2 and rows(database_url, f"SELECT 1 FROM {EXECUTIONS}") == []


def test_listing_total_is_exact_up_to_the_cap_then_an_estimate_it_says_is_one(
        store: PgExecutionStore, database: Database, database_url: str) -> None:
    now = midday_epoch(today_utc())
    events = [Transition(f"t{i:02d}", "PENDING", now + i, "sent", {"task_name": "job"})
              for i in range(30)]
    store.apply(fold(events).values(), events)
    history = PgHistory(database)
    page = history.list_tasks(TaskQuery(limit=10))
    assert page.total == 30 and page.extra == {"total_estimated": False}

    def run(sql: str, params: Any) -> list[dict[str, Any]]:
        return database.rows(sql, params)

    assert count_rows(run, [], []) == (30, False)
    total, estimated = count_rows(run, [], [], cap=5)
    assert estimated and total >= 6
    assert count_rows(run, ["task_name = %s"], ["other"], cap=5) == (0, False)


@pytest.mark.parametrize(("name", "value"), [
    ("FLOWER_OPS_SYNC_PARTITION_DAYS", "0"), ("FLOWER_OPS_SYNC_PARTITION_DAYS", "week"),
    ("FLOWER_OPS_SYNC_PARTITIONS_AHEAD_DAYS", "0"),
    ("FLOWER_OPS_SYNC_PARTITIONS_AHEAD_DAYS", "1000")])
def test_bad_partition_settings_stop_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SyncWorkerConfig.from_env({"DATABASE_URL": "postgresql://x@localhost/db", name: value})
    assert name in str(raised.value)
    config = SyncWorkerConfig.from_env({"DATABASE_URL": "postgresql://x@localhost/db"})
    assert (config.partition_days, config.partitions_ahead_days) == (1, 7)


def test_a_task_shows_its_children_from_later_partitions(
        store: PgExecutionStore, database: Database, database_url: str) -> None:
    yesterday = today_utc() - timedelta(days=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_partition(conn, yesterday, 1)
    apply(store, "parent", "PENDING", midday_epoch(yesterday), task_name="job")
    apply(store, "child", "PENDING", midday_epoch(today_utc()), task_name="job",
          parent_id="parent")
    assert day_of(database_url, "child") == [today_utc()]
    task = PgHistory(database).get_task("parent")
    assert task is not None and task["children"] == ["child"]


def test_a_task_written_twice_around_midnight_is_folded_into_one_row(
        store: PgExecutionStore, database: Database, database_url: str) -> None:
    today = today_utc()
    yesterday = today - timedelta(days=1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_partition(conn, yesterday, 1)
    apply(store, "dup", "PENDING", midday_epoch(yesterday), task_name="job", args=[1])
    # another replica, at the same moment, with the task's end (after midnight)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {EXECUTIONS} (execution_id, status, status_at, result, "
                     "succeeded_at, first_seen_at, first_seen_day, retried_as) VALUES ('dup', "
                     "'success', to_timestamp(%s), '7', to_timestamp(%s), to_timestamp(%s), %s, "
                     "'dup-2')", (midday_epoch(today),) * 3 + (today,))
        conn.execute(f"INSERT INTO {HISTORY} (execution_id, state, occurred_at, "
                     "first_seen_day) VALUES ('dup', 'SUCCESS', to_timestamp(%s), %s)",
                     (midday_epoch(today), today))
    retention = Retention(database)
    assert retention.fold_duplicates() == 1
    found = rows(database_url, f"SELECT status, result, task_name, args, retried_as, "
                               f"first_seen_day, first_seen_at, succeeded_at FROM {EXECUTIONS} "
                               "WHERE execution_id = 'dup'")
    assert len(found) == 1
    status, result, name, args, retried_as, day, first_seen, succeeded = found[0]
    assert (status, result, name, args, retried_as, day) == ("success", 7, "job", [1], "dup-2",
                                                             yesterday)
    assert first_seen.timestamp() == midday_epoch(yesterday)
    assert succeeded.timestamp() == midday_epoch(today)
    assert rows(database_url, f"SELECT state, first_seen_day FROM {HISTORY} WHERE "
                              "execution_id = 'dup' ORDER BY occurred_at") == [
        ("PENDING", yesterday), ("SUCCESS", yesterday)]
    assert retention.fold_duplicates() == 0
