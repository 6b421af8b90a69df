-- Ownership as a lease (see lease.rs): the owner process's unique id and host,
-- and when its claim expires (milliseconds since the epoch) unless renewed.
-- owner_pid stays: on the owner's own host a dead pid releases at once.
ALTER TABLE runs ADD COLUMN owner_id TEXT;
ALTER TABLE runs ADD COLUMN owner_host TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;
ALTER TABLE jobs ADD COLUMN owner_id TEXT;
ALTER TABLE jobs ADD COLUMN owner_host TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
-- Recovery looks for unfinished records whose lease expired.
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
