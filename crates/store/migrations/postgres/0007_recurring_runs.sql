-- Recurring runs (KFP v2beta1 /recurringruns): a pipeline, its runtime config
-- and a trigger (cron or periodic, JSON as KFP writes it). next_fire_ms is the
-- next slot not fired yet (milliseconds since the epoch; NULL once the
-- schedule has ended): firing a slot creates its run under an id derived from
-- the schedule and the slot, so two servers never fire one slot twice.
CREATE TABLE IF NOT EXISTS recurring_runs (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT,
    experiment_id TEXT NOT NULL,
    pipeline_id TEXT,
    pipeline_version_id TEXT,
    pipeline_spec TEXT,
    runtime_config TEXT,
    trigger_spec TEXT NOT NULL,
    max_concurrency BIGINT NOT NULL,
    no_catchup BIGINT NOT NULL DEFAULT 0,
    enabled BIGINT NOT NULL DEFAULT 1,
    next_fire_ms BIGINT,
    -- Why the schedule stopped by itself (it was disabled then).
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
ALTER TABLE run_catalog ADD COLUMN recurring_run_id TEXT;
CREATE INDEX IF NOT EXISTS run_catalog_recurring ON run_catalog (recurring_run_id);
