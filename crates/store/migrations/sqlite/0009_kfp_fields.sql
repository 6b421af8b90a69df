-- KFP 2.17's fields: tags on pipelines and versions (a JSON object of
-- strings, NULL when there are none) and the service account of runs and
-- recurring runs.
ALTER TABLE pipelines ADD COLUMN tags TEXT;
ALTER TABLE pipeline_versions ADD COLUMN tags TEXT;
ALTER TABLE run_catalog ADD COLUMN service_account TEXT;
ALTER TABLE recurring_runs ADD COLUMN service_account TEXT;
