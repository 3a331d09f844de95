"""The in-place migration of today's unpartitioned history (schema version 4,
rows in it) to partitioned tables, against a real PostgreSQL: attached at
once as the legacy partition, then emptied into the real days by a real
sync worker process (killed half-way and started again) while writes go on."""
from __future__ import annotations

import random
import threading
from datetime import timedelta

import psycopg
import pytest

from flower_ops.core.transitions import Transition, fold
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.history import PgHistory
from flower_ops.db.partitions_mover import LegacyMover
from testing.partitions import fill_unpartitioned, partition_names, today_utc
from testing.processes import SyncWorkerProcess
from testing.settings import FAST_SYNC_WORKER
from testing.waiting import wait_for

EXECUTIONS = "automation.job_executions"
HISTORY = "automation.job_execution_history"
OLD_TASKS = 20_000


def count(database_url: str, sql: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0


def legacy_rows(database_url: str) -> int:
    if "job_executions_legacy" not in partition_names(database_url, EXECUTIONS):
        return 0
    return count(database_url, "SELECT count(*) FROM automation.job_executions_legacy")


def test_unpartitioned_history_is_migrated_in_place_while_writes_continue(
        database_url: str, redis_url: str) -> None:
    fill_unpartitioned(database_url, tasks=OLD_TASKS, days=4)
    with psycopg.connect(database_url) as conn:
        sent = dict(conn.execute(f"SELECT execution_id, extract(epoch FROM first_seen_at)::float8 "
                                 f"FROM {EXECUTIONS}").fetchall())
    database = batch_database(database_url, application_name="test-migration-writer")
    database.open()      # migrates: the old tables are now the legacy partitions
    store = PgExecutionStore(database)
    assert legacy_rows(database_url) == OLD_TASKS
    assert "job_execution_history_legacy" in partition_names(database_url, HISTORY)

    # writes go on all along: every old task finishes (its STARTED event
    # replayed in the same batch), and new tasks arrive
    errors: list[BaseException] = []
    ids = sorted(sent)
    random.Random(7).shuffle(ids)

    def write() -> None:
        try:
            for n in range(0, len(ids), 250):
                chunk = ids[n:n + 250]
                events = [Transition(i, "SUCCESS", sent[i] + 2, "succeeded", {"result": 1})
                          for i in chunk]
                events += [Transition(i, "STARTED", sent[i] + 1, "started", {"worker": "w1"})
                           for i in chunk]
                events += [Transition(f"new-{n}", "PENDING", sent[chunk[0]], "sent",
                                      {"task_name": "job"})]
                store.apply(fold(events).values(), events)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    sync = SyncWorkerProcess(redis_url=redis_url, database_url=database_url, env={
        **FAST_SYNC_WORKER, "FLOWER_OPS_SYNC_RETENTION_BATCH_SIZE": "200",
        "FLOWER_OPS_SYNC_RETENTION_DAYS": "0"})
    try:
        writer.start()
        sync.start()
        # killed half-way: every batch is its own transaction, nothing is lost
        wait_for(lambda: 0 < legacy_rows(database_url) < OLD_TASKS - 1000,
                 timeout_seconds=120, interval_seconds=0.05, message="the mover half-way")
        sync.kill()
        assert legacy_rows(database_url) > 0
        sync.start()
        wait_for(lambda: not any("legacy" in name for table in (EXECUTIONS, HISTORY)
                                 for name in partition_names(database_url, table)),
                 timeout_seconds=300, interval_seconds=0.5, message="legacy partitions gone")
        writer.join(120)
        assert not errors, errors
    finally:
        sync.stop()
        database.close()

    news = len(range(0, OLD_TASKS, 250))
    assert count(database_url, f"SELECT count(*) FROM {EXECUTIONS}") == OLD_TASKS + news
    assert count(database_url, f"SELECT count(DISTINCT execution_id) FROM {EXECUTIONS}") == \
        OLD_TASKS + news
    assert count(database_url, f"SELECT count(*) FROM {EXECUTIONS} WHERE execution_id LIKE "
                               "'old-%%' AND (status <> 'success' OR result <> '1')") == 0
    # each row in the partition of its day; its history with it, each transition once
    assert count(database_url, f"SELECT count(*) FROM {EXECUTIONS} WHERE first_seen_day <> "
                               "(first_seen_at AT TIME ZONE 'UTC')::date "
                               "AND execution_id LIKE 'old-%%'") == 0
    # a new task of a day with no partition yet went to the oldest one there was
    assert count(database_url, f"SELECT count(*) FROM {EXECUTIONS} WHERE first_seen_day < "
                               "(first_seen_at AT TIME ZONE 'UTC')::date") == 0
    assert count(database_url, f"SELECT count(*) FROM {HISTORY}") == 3 * OLD_TASKS + news
    assert count(database_url, f"SELECT count(*) FROM {HISTORY} h JOIN {EXECUTIONS} e USING "
                               "(execution_id, first_seen_day)") == 3 * OLD_TASKS + news
    days = set(partition_names(database_url, EXECUTIONS))
    assert {f"job_executions_p{today_utc() - timedelta(days=n):%Y%m%d}"
            for n in range(1, 5)} <= days
    reader = batch_database(database_url, application_name="test-migration-reader")
    try:
        task = PgHistory(reader).get_task(ids[0])
        assert task is not None and task["state"] == "SUCCESS"
        assert [h["state"] for h in task["history"]] == ["PENDING", "STARTED", "SUCCESS"]
    finally:
        reader.close()


@pytest.mark.parametrize("tasks", [0, 2_000])
def test_the_mover_deletes_rows_already_past_retention_and_drops_the_legacy_tables(
        database_url: str, tasks: int) -> None:
    fill_unpartitioned(database_url, tasks=tasks, days=4)
    database = batch_database(database_url, application_name="test-mover")
    database.open()
    try:
        mover = LegacyMover(database)
        assert bool(mover.legacy()) == (tasks > 0)   # an empty history has none at all
        today = today_utc()
        reports = []
        while not (reports and reports[-1].finished):
            reports.append(mover.move_batch(batch_size=300, drop_before=today - timedelta(days=2)))
        assert mover.legacy() == []
        # days -4 and -3 end on or before the cutoff's day: deleted, their history too
        assert sum(r.deleted for r in reports) == tasks // 2
        assert sum(r.moved for r in reports) == tasks // 2
        with psycopg.connect(database_url) as conn:
            found = conn.execute(f"SELECT first_seen_day, count(*) FROM {EXECUTIONS} "
                                 "GROUP BY 1 ORDER BY 1").fetchall()
            history = conn.execute(f"SELECT count(*) FROM {HISTORY}").fetchone()
        assert found == ([] if not tasks else [(today - timedelta(days=2), tasks // 4),
                                               (today - timedelta(days=1), tasks // 4)])
        assert history == (tasks,)
    finally:
        database.close()
