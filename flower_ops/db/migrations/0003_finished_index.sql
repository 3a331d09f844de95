-- When a finished task finished: the per-minute series and the task-name
-- table (db/insights.py) select finished rows by this exact expression.
-- (A plain CREATE INDEX: on a very large existing table it holds writes for
-- the time it takes; the sync worker waits and then catches up.)
CREATE INDEX IF NOT EXISTS job_executions_finished_at ON automation.job_executions
    ((CASE WHEN status = 'success' THEN succeeded_at ELSE failed_at END))
    WHERE status IN ('success', 'failure');
