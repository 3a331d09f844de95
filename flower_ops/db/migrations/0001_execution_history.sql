-- Execution history: one row per Celery task, its transitions, operator audit.
-- Written by the sync worker (task state) and the monitor (cancel/retry audit).

CREATE SCHEMA IF NOT EXISTS automation;

CREATE TABLE automation.job_executions (
    execution_id      text PRIMARY KEY,              -- the Celery task id
    task_name         text,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'received', 'started', 'success',
                                        'failure', 'retry', 'cancelled')),
    -- when the event that set `status` happened (guards RETRY ordering)
    status_at         timestamptz,
    -- set when the sync worker declared the task lost (its worker died
    -- mid-run); a later real event may still advance such a row
    worker_lost       boolean NOT NULL DEFAULT false,
    args              jsonb,
    kwargs            jsonb,
    args_exact        boolean NOT NULL DEFAULT false,
    result            jsonb,
    error             text,
    traceback         text,
    worker            text,
    queue             text,
    routing_key       text,
    exchange          text,
    retries           integer NOT NULL DEFAULT 0,
    retry_of          text,
    retried_as        text,
    parent_id         text,
    root_id           text,
    eta               timestamptz,
    expires           timestamptz,
    -- lifecycle timestamps: the first time the task reached each state
    sent_at           timestamptz,
    received_at       timestamptz,
    started_at        timestamptz,
    succeeded_at      timestamptz,
    failed_at         timestamptz,
    retried_at        timestamptz,
    revoked_at        timestamptz,
    runtime           double precision,               -- seconds
    -- the task's first known timestamp: listing order, time filters, retention
    first_seen_at     timestamptz NOT NULL,
    reconciled_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_executions_time_idx
    ON automation.job_executions (first_seen_at DESC, execution_id DESC);
CREATE INDEX job_executions_status_time_idx
    ON automation.job_executions (status, first_seen_at DESC, execution_id DESC);
CREATE INDEX job_executions_name_time_idx
    ON automation.job_executions (task_name, first_seen_at DESC, execution_id DESC);
CREATE INDEX job_executions_worker_time_idx
    ON automation.job_executions (worker, first_seen_at DESC);
CREATE INDEX job_executions_queue_time_idx
    ON automation.job_executions (queue, first_seen_at DESC);
CREATE INDEX job_executions_parent_idx
    ON automation.job_executions (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX job_executions_created_idx
    ON automation.job_executions (created_at);
-- what reconciliation walks: rows that are not final yet
CREATE INDEX job_executions_open_idx
    ON automation.job_executions (execution_id)
    WHERE status IN ('pending', 'received', 'started', 'retry');

CREATE TABLE automation.job_execution_history (
    id                bigserial PRIMARY KEY,
    execution_id      text NOT NULL,
    state             text NOT NULL,                  -- Celery state name
    occurred_at       timestamptz NOT NULL,
    worker            text,
    source            text NOT NULL DEFAULT 'event',  -- event | reconcile | operator
    detail            jsonb,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (execution_id, state, occurred_at)
);

CREATE TABLE automation.operator_audit (
    id                bigserial PRIMARY KEY,
    occurred_at       timestamptz NOT NULL DEFAULT now(),
    subject           text NOT NULL,                  -- who: the JWT subject
    action            text NOT NULL,                  -- cancel | retry | ...
    execution_id      text,
    outcome           text NOT NULL,                  -- ok | rejected | error
    detail            jsonb
);
CREATE INDEX operator_audit_task_idx ON automation.operator_audit (execution_id);
CREATE INDEX operator_audit_time_idx ON automation.operator_audit (occurred_at DESC);

-- rows moved here by retention when FLOWER_OPS_SYNC_RETENTION_MODE=archive
CREATE TABLE automation.job_executions_archive (LIKE automation.job_executions);

-- The monotonic guard, in one place for every writer (sync worker batches,
-- reconciliation, the monitor's cancel): does `new` replace `cur`?
--   final states (success > failure > cancelled) only give way to a higher
--   final state, or to anything later when the row was declared lost;
--   any final state beats any open one;
--   RETRY ends an attempt, so around it the later event wins (a retry
--   attempt advances the row, a late RETRY of an earlier attempt does not);
--   otherwise pending < received < started.
CREATE FUNCTION automation.status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'pending' THEN 0 WHEN 'received' THEN 1 WHEN 'started' THEN 2
        WHEN 'retry' THEN 3 WHEN 'cancelled' THEN 10 WHEN 'failure' THEN 11
        WHEN 'success' THEN 12 ELSE -1 END
$$;

CREATE FUNCTION automation.status_advances(cur text, cur_at timestamptz, cur_lost boolean,
                                           new text, new_at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN new IS NULL THEN false
        WHEN cur IS NULL THEN true
        WHEN automation.status_rank(cur) >= 10 THEN
            (cur_lost AND COALESCE(new_at > cur_at, false))
            OR automation.status_rank(new) > automation.status_rank(cur)
        WHEN automation.status_rank(new) >= 10 THEN true
        WHEN new = 'retry' OR cur = 'retry' THEN COALESCE(new_at > cur_at, new_at IS NOT NULL)
        ELSE automation.status_rank(new) > automation.status_rank(cur)
    END
$$;

-- A replayed or duplicated event must change nothing, not even updated_at:
-- skip updates that leave the row as it was.
CREATE FUNCTION automation.job_executions_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN
        RETURN NEW;                 -- set explicitly (maintenance): keep it
    END IF;
    IF NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NULL;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER job_executions_touch BEFORE UPDATE ON automation.job_executions
    FOR EACH ROW EXECUTE FUNCTION automation.job_executions_touch();
