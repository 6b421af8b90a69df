-- Where a job runs (host, SageMaker job name, cluster pods) and its metrics over time.
ALTER TABLE jobs ADD COLUMN placement TEXT;

CREATE TABLE IF NOT EXISTS job_metrics (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_metrics_job ON job_metrics (job_id, seq);
