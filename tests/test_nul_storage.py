"""NUL characters in task data, against a real PostgreSQL: its jsonb and text
refuse U+0000, so both writers spell it out and stop calling such args exact
(found by the API fuzzing suite: cancel/retry answered 503, and the sync
worker's writer thread died on the first such task)."""
from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from flower_ops.core.transitions import Transition, fold
from flower_ops.db.actions import ActionStore, AuditRecord
from flower_ops.db.batch import PgExecutionStore, batch_database
from flower_ops.db.jsonsafe import clean_text, holds_nul, jsonb_text
from flower_ops.db.pool import Database

NUL_ARGS = ["nul\x00here", {"k\x00": ["\x00"]}, "a backslash: \\u0000 stays text"]
NUL_KWARGS = {"key\x00": "value\x00"}
SPELLED_ARGS = ["nul\\u0000here", {"k\\u0000": ["\\u0000"]}, "a backslash: \\u0000 stays text"]


def _row(database_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute("SELECT * FROM automation.job_executions WHERE execution_id = %s",
                           (task_id,))
        values = cur.fetchone()
        assert values is not None, f"no row for {task_id}"
        return dict(zip([d.name for d in cur.description or []], values, strict=True))


def test_jsonb_text_spells_out_encoded_nul_only() -> None:
    expected = {
        "a\x00b": ("a\\u0000b", True),
        "\\\x00": ("\\\\u0000", True),              # a backslash, then NUL
        "\\u0000 as text": ("\\u0000 as text", False),  # no NUL: unchanged
        "plain": ("plain", False),
    }
    for value, (stored, changed) in expected.items():
        text, was_changed = jsonb_text(json.dumps(value))
        assert (json.loads(text), was_changed) == (stored, changed), value
    assert holds_nul({"a": ["\x00"]}) and not holds_nul({"a": ["\\u0000"]})
    assert clean_text("sub\x00ject") == "sub\\x00ject" and clean_text(None) is None


def test_sync_worker_stores_nul_args_spelled_out_and_not_exact(database_url: str) -> None:
    database = batch_database(database_url, application_name="test-nul-storage")
    store = PgExecutionStore(database)
    try:
        t0 = time.time()
        sent = Transition("nul-task", "PENDING", t0, "sent",
                          {"task_name": "automation.echo", "args": NUL_ARGS,
                           "kwargs": NUL_KWARGS, "args_exact": True})
        failed = Transition("nul-task", "FAILURE", t0 + 1, "failed",
                            {"error": "ValueError('nul\x00')", "traceback": "Trace\x00back",
                             "result": {"exc": "nul\x00"}})
        ok = Transition("plain-task", "PENDING", t0, "sent",
                        {"task_name": "automation.add", "args": [1, 2], "kwargs": {},
                         "args_exact": True})
        store.apply(fold([sent, failed, ok]).values(), [sent, failed, ok])
    finally:
        database.close()

    row = _row(database_url, "nul-task")
    assert row["status"] == "failure"
    assert row["args"] == SPELLED_ARGS and row["kwargs"] == {"key\\u0000": "value\\u0000"}
    assert row["args_exact"] is False
    assert row["error"] == "ValueError('nul\\x00')"
    assert _row(database_url, "plain-task")["args_exact"] is True   # the same batch landed


def test_sync_worker_stores_nul_in_id_name_worker_and_queue(database_url: str) -> None:
    # A hostile or buggy producer can put NUL anywhere in an event; a batch
    # PostgreSQL refuses would stall the writer for every task after it.
    database = batch_database(database_url, application_name="test-nul-storage")
    store = PgExecutionStore(database)
    try:
        t0 = time.time()
        sent = Transition("id\x00nul", "PENDING", t0, "sent",
                          {"task_name": "automation.\x00echo", "args": [], "kwargs": {},
                           "args_exact": True, "queue": "q\x00", "routing_key": "r\x00",
                           "exchange": "e\x00", "parent_id": "p\x00", "root_id": "r\x00"})
        started = Transition("id\x00nul", "STARTED", t0 + 1, "started",
                             {"worker": "celery@host\x00"})
        ok = Transition("plain-after-nul", "PENDING", t0, "sent",
                        {"task_name": "automation.add", "args": [1], "kwargs": {}})
        store.apply(fold([sent, started, ok]).values(), [sent, started, ok])
    finally:
        database.close()

    row = _row(database_url, "id\\x00nul")
    assert (row["task_name"], row["worker"], row["queue"], row["status"]) == (
        "automation.\\x00echo", "celery@host\\x00", "q\\x00", "started")
    assert _row(database_url, "plain-after-nul")["status"] == "pending"


def test_cancel_and_retry_records_with_nul_args_and_subject(database_url: str) -> None:
    database = Database(url=database_url, application_name="test-nul-storage")
    store = ActionStore(database)
    subject = "operator\x00 zoë"
    try:
        with store.transaction() as tx:
            status = tx.mark_cancelled(task_id="cancel-me", at=time.time(), subject=subject,
                                       name="automation.echo", args=NUL_ARGS, kwargs=NUL_KWARGS,
                                       args_exact=True, queue="parked", routing_key="parked",
                                       exchange="")
            tx.record_retry(original_id="failed-one", original_state="FAILURE",
                            new_id="retried-one", at=time.time(), subject=subject,
                            name="automation.fail", args=NUL_ARGS, kwargs=NUL_KWARGS,
                            queue="celery", routing_key="celery", exchange="")
            tx.audit([AuditRecord(subject, "cancel", "cancel-me", "ok",
                                  {"note": "nul\x00"})])
        entries = store.audit_entries(task_id="cancel-me")
    finally:
        database.close()

    assert status == "cancelled"
    cancelled = _row(database_url, "cancel-me")
    assert cancelled["args"] == SPELLED_ARGS and cancelled["args_exact"] is False
    for task_id in ("failed-one", "retried-one"):
        assert _row(database_url, task_id)["args_exact"] is False, task_id
    assert _row(database_url, "retried-one")["retry_of"] == "failed-one"
    assert entries[0]["subject"] == "operator\\x00 zoë"
    assert entries[0]["detail"] == {"note": "nul\\u0000"}
