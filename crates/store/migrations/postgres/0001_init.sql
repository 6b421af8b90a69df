CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline_name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    parameters TEXT NOT NULL,
    pipeline_root TEXT NOT NULL,
    options TEXT NOT NULL,
    outputs TEXT,
    error TEXT,
    owner_pid BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);

CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_key TEXT NOT NULL,
    name TEXT NOT NULL,
    parent_key TEXT,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    cached BIGINT NOT NULL DEFAULT 0,
    inputs TEXT,
    outputs TEXT,
    log_path TEXT,
    error TEXT,
    fingerprint TEXT,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (run_id, task_key)
);

CREATE TABLE IF NOT EXISTS transitions (
    seq BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task_key TEXT,
    state TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_run ON transitions (run_id, seq);

CREATE TABLE IF NOT EXISTS cache_entries (
    fingerprint TEXT PRIMARY KEY,
    outputs TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
