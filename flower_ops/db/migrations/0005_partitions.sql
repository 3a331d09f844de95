-- Partitioned history (issue #14): job_executions and job_execution_history
-- become tables PARTITIONED BY RANGE (first_seen_day), the UTC day the task
-- was first seen, fixed when its row is first written (first_seen_at stays a
-- normal column: still the listing order, still moved earlier with LEAST).
-- A partitioned table's unique keys must hold the partition key, so the keys
-- become (execution_id, first_seen_day) and, for history, (execution_id,
-- first_seen_day, state, occurred_at): a task's history lives in the
-- partition of its task's day, dropped with it.
--
-- In place and at once: the tables as they were are attached whole as the
-- partition of day 1970-01-01 (the "legacy" partitions), so every reader and
-- writer goes on working the moment this commits; the sync worker's leader
-- then moves their rows to their real days, a batch at a time
-- (flower_ops/db/partitions_mover.py), and drops them when empty.
-- What makes this quick on a big table is done before, outside this
-- transaction, by flower_ops/db/migrate.py (prepare_partitions): the day
-- column (a constant default: no rewrite), its CHECK validated and the new
-- unique indexes built CONCURRENTLY, without blocking writes. Every step below
-- is written so that it also works when that was not done (a fresh install,
-- empty tables: each step is instant then).
-- Partitions for days are created ahead by the processes themselves
-- (flower_ops/db/partitions.py); retention detaches them whole.

-- not while another process runs prepare_partitions (0x466C6F7750726570)
SELECT pg_advisory_xact_lock(5074553438381172080);

CREATE SCHEMA IF NOT EXISTS automation_archive;

-- 1. The tables as they are: the day column, constant, proved by a CHECK
ALTER TABLE automation.job_executions
    ADD COLUMN IF NOT EXISTS first_seen_day date NOT NULL DEFAULT '1970-01-01';
ALTER TABLE automation.job_execution_history
    ADD COLUMN IF NOT EXISTS first_seen_day date NOT NULL DEFAULT '1970-01-01';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'job_executions_legacy_day'
                     AND conrelid = 'automation.job_executions'::regclass) THEN
        ALTER TABLE automation.job_executions ADD CONSTRAINT job_executions_legacy_day
            CHECK (first_seen_day >= '1970-01-01' AND first_seen_day < '1970-01-02');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'job_execution_history_legacy_day'
                     AND conrelid = 'automation.job_execution_history'::regclass) THEN
        ALTER TABLE automation.job_execution_history ADD CONSTRAINT job_execution_history_legacy_day
            CHECK (first_seen_day >= '1970-01-01' AND first_seen_day < '1970-01-02');
    END IF;
END $$;
ALTER TABLE automation.job_executions VALIDATE CONSTRAINT job_executions_legacy_day;
ALTER TABLE automation.job_execution_history VALIDATE CONSTRAINT job_execution_history_legacy_day;
CREATE UNIQUE INDEX IF NOT EXISTS job_executions_legacy_day_key
    ON automation.job_executions (execution_id, first_seen_day);
CREATE UNIQUE INDEX IF NOT EXISTS job_execution_history_legacy_day_key
    ON automation.job_execution_history (execution_id, first_seen_day, state, occurred_at);
-- (ATTACH adopts an index for the parent's key only if a constraint of the
-- same kind uses it: the old primary key (execution_id) gives way to
-- (execution_id, first_seen_day), the same thing while the day is constant)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'job_executions_legacy_day_key') THEN
        ALTER TABLE automation.job_executions DROP CONSTRAINT IF EXISTS job_executions_pkey;
        ALTER TABLE automation.job_executions ADD CONSTRAINT job_executions_legacy_day_key
            PRIMARY KEY USING INDEX job_executions_legacy_day_key;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'job_execution_history_legacy_day_key') THEN
        ALTER TABLE automation.job_execution_history
            ADD CONSTRAINT job_execution_history_legacy_day_key
            UNIQUE USING INDEX job_execution_history_legacy_day_key;
    END IF;
END $$;

-- 2. Their index names go to the legacy tables (index names are per schema)
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT i.relname FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid IN ('automation.job_executions'::regclass,
                                  'automation.job_execution_history'::regclass)
               AND i.relname NOT LIKE '%legacy%'
    LOOP
        EXECUTE format('ALTER INDEX automation.%I RENAME TO %I', r.relname,
                       left(r.relname, 50) || '_legacy');
    END LOOP;
END $$;
DROP TRIGGER job_executions_touch ON automation.job_executions;
ALTER TABLE automation.job_executions RENAME TO job_executions_legacy;
ALTER TABLE automation.job_execution_history RENAME TO job_execution_history_legacy;

-- 3. The partitioned tables: the same columns (LIKE), CHECKs and defaults
CREATE TABLE automation.job_executions
    (LIKE automation.job_executions_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (first_seen_day);
ALTER TABLE automation.job_executions DROP CONSTRAINT job_executions_legacy_day;
ALTER TABLE automation.job_executions ALTER COLUMN first_seen_day DROP DEFAULT;
ALTER TABLE automation.job_executions
    ADD CONSTRAINT job_executions_pkey PRIMARY KEY (execution_id, first_seen_day);

CREATE TABLE automation.job_execution_history
    (LIKE automation.job_execution_history_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (first_seen_day);
ALTER TABLE automation.job_execution_history DROP CONSTRAINT job_execution_history_legacy_day;
ALTER TABLE automation.job_execution_history ALTER COLUMN first_seen_day DROP DEFAULT;
ALTER TABLE automation.job_execution_history ADD CONSTRAINT job_execution_history_key
    UNIQUE (execution_id, first_seen_day, state, occurred_at);
-- the id sequence must outlive the legacy table
ALTER SEQUENCE automation.job_execution_history_id_seq
    OWNED BY automation.job_execution_history.id;

-- the indexes of 0001-0004, the same definitions (ATTACH adopts the legacy
-- table's own instead of building new ones)
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
CREATE INDEX job_executions_open_idx
    ON automation.job_executions (execution_id)
    WHERE status IN ('pending', 'received', 'started', 'retry');
CREATE INDEX job_executions_finished_at ON automation.job_executions
    ((CASE WHEN status = 'success' THEN succeeded_at ELSE failed_at END))
    WHERE status IN ('success', 'failure');
CREATE INDEX job_executions_workflow_idx
    ON automation.job_executions (workflow_id, first_seen_at)
    WHERE workflow_id IS NOT NULL;

-- 4. The old tables become the partitions of day 1970-01-01 (their CHECK
-- proves the bound: no scan; their indexes match: none built)
ALTER TABLE automation.job_executions ATTACH PARTITION automation.job_executions_legacy
    FOR VALUES FROM ('1970-01-01') TO ('1970-01-02');
ALTER TABLE automation.job_execution_history
    ATTACH PARTITION automation.job_execution_history_legacy
    FOR VALUES FROM ('1970-01-01') TO ('1970-01-02');

CREATE TRIGGER job_executions_touch BEFORE UPDATE ON automation.job_executions
    FOR EACH ROW EXECUTE FUNCTION automation.job_executions_touch();

-- 5. Where a partitioned table's partitions are, read from the catalog:
-- (name, first day, day after the last, legacy); what the writers clamp a
-- new row's day into, what retention and the mover walk.
CREATE FUNCTION automation.partition_days(parent regclass)
RETURNS TABLE (name text, from_day date, to_day date, legacy boolean)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$FROM \('([0-9-]+)'\)$r$)::date,
           substring(pg_get_expr(c.relpartbound, c.oid) FROM $r$TO \('([0-9-]+)'\)$r$)::date,
           c.relname LIKE '%\_legacy'
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent
$$;

-- 6. A fresh install (or an empty history) has nothing to move: no legacy
-- partitions then (nobody else writes them: this transaction holds them)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM automation.job_executions_legacy)
       AND NOT EXISTS (SELECT 1 FROM automation.job_execution_history_legacy) THEN
        ALTER TABLE automation.job_executions
            DETACH PARTITION automation.job_executions_legacy;
        DROP TABLE automation.job_executions_legacy;
        ALTER TABLE automation.job_execution_history
            DETACH PARTITION automation.job_execution_history_legacy;
        DROP TABLE automation.job_execution_history_legacy;
    END IF;
END $$;
