-- The pipeline task a training job runs for (NULL for a job submitted on its
-- own): a task that runs again after its process died finds its job here and
-- follows it instead of submitting a second one.
ALTER TABLE jobs ADD COLUMN run_id TEXT;
ALTER TABLE jobs ADD COLUMN task_key TEXT;
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (run_id, task_key);
