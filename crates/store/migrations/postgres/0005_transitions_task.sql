-- The latest transition of one task (put_task reads it on every write): without
-- this, finding it scanned every transition of the run, quadratic in its tasks.
CREATE INDEX IF NOT EXISTS transitions_task ON transitions (run_id, task_key, seq);
