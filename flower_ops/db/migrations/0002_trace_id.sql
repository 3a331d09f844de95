-- The trace id of a task's W3C trace context (``traceparent``), carried in
-- the task-sent event by instrument(app) when a tracing setup propagates one.
ALTER TABLE automation.job_executions ADD COLUMN IF NOT EXISTS trace_id text;
-- retention moves rows with SELECT *: the archive keeps the same columns
ALTER TABLE automation.job_executions_archive ADD COLUMN IF NOT EXISTS trace_id text;
