CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT,
    storage_state TEXT NOT NULL DEFAULT 'AVAILABLE',
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS experiments_name ON experiments (display_name);

CREATE TABLE IF NOT EXISTS pipelines (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS pipeline_versions (
    id TEXT PRIMARY KEY,
    pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (pipeline_id, name)
);

CREATE TABLE IF NOT EXISTS run_catalog (
    run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    experiment_id TEXT NOT NULL,
    storage_state TEXT NOT NULL DEFAULT 'AVAILABLE',
    description TEXT,
    pipeline_id TEXT,
    pipeline_version_id TEXT,
    runtime_config TEXT
);
CREATE INDEX IF NOT EXISTS run_catalog_experiment ON run_catalog (experiment_id);
