"""Where things are in PostgreSQL: the schema's tables and the column lists
the readers and writers share (the tables themselves are made by
``migrations/``).

A new stored task field is a migration, its column in ``EXECUTION_COLUMNS``
(read) and in the batch merge (``batch.py``, written); nothing else names
columns.
"""
from __future__ import annotations

from flower_ops.core.lifecycle import OPEN_STATUSES, TIMESTAMP_FIELDS

SCHEMA = "automation"
EXECUTIONS = f"{SCHEMA}.job_executions"
HISTORY = f"{SCHEMA}.job_execution_history"
AUDIT = f"{SCHEMA}.operator_audit"
ARCHIVE = f"{SCHEMA}.job_executions_archive"
MIGRATIONS = f"{SCHEMA}.schema_migrations"
# running monitors and the answers of idempotent actions (migrations/0006)
MONITORS = f"{SCHEMA}.monitors"
IDEMPOTENCY = f"{SCHEMA}.idempotency_keys"
ALERT_DELIVERIES = f"{SCHEMA}.alert_deliveries"
# The SQL twin of core.lifecycle.advances (migrations/0001)
STATUS_ADVANCES = f"{SCHEMA}.status_advances"

# API task field (``started``) -> column (``started_at``)
TIME_COLUMNS = {name: f"{name}_at" for name in TIMESTAMP_FIELDS}

# ``status IN (...)`` for rows that are not final yet
OPEN_STATUS_LIST = ", ".join(f"'{status}'" for status in OPEN_STATUSES)

# The sync worker's per-session staging tables (``batch.py``): a batch is COPYed
# here, then merged into EXECUTIONS / HISTORY in the same transaction
STAGING = "pg_temp.sync_staging"
HISTORY_STAGING = "pg_temp.sync_history_staging"

# Every column a task row is read with (``history.task_from_row``)
EXECUTION_COLUMNS = (
    "execution_id, task_name, status, status_at, worker_lost, args, kwargs, args_exact, "
    "result, error, traceback, worker, queue, routing_key, exchange, retries, retry_of, "
    "retried_as, parent_id, root_id, eta, expires, runtime, trace_id, workflow_id, canvas, "
    "first_seen_at, first_seen_day, "
    "updated_at, "
    + ", ".join(TIME_COLUMNS.values())
    + ", (extract(epoch FROM first_seen_at) * 1000000)::bigint AS first_seen_us"
)
