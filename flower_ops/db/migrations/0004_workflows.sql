-- Workflows (Celery's canvas): the workflow a task belongs to and its links
-- as published (group, chain continuation, callbacks, chord body), carried
-- in the task-sent event by instrument(app); see flower_ops/core/canvas.py.
-- ``links`` is the canvas's ids and names only: what the tree reads (a
-- chain's messages repeat every later step with its arguments; only a resume
-- needs those). The tree of a workflow is one indexed read: WHERE workflow_id = $1.
ALTER TABLE automation.job_executions ADD COLUMN IF NOT EXISTS workflow_id text;
ALTER TABLE automation.job_executions ADD COLUMN IF NOT EXISTS canvas jsonb;
ALTER TABLE automation.job_executions ADD COLUMN IF NOT EXISTS links jsonb;
-- retention moves rows with SELECT *: the archive keeps the same columns, in
-- the same order
ALTER TABLE automation.job_executions_archive ADD COLUMN IF NOT EXISTS workflow_id text;
ALTER TABLE automation.job_executions_archive ADD COLUMN IF NOT EXISTS canvas jsonb;
ALTER TABLE automation.job_executions_archive ADD COLUMN IF NOT EXISTS links jsonb;
CREATE INDEX IF NOT EXISTS job_executions_workflow_idx
    ON automation.job_executions (workflow_id, first_seen_at)
    WHERE workflow_id IS NOT NULL;
