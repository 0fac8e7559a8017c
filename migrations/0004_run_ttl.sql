-- Run time-to-live: a run not started in time is expired.
-- depends: 0003_schedules

ALTER TABLE jobs ADD COLUMN run_ttl_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN expires_at timestamptz;
-- The expiry sweep scans exactly the waiting runs that can expire.
CREATE INDEX runs_expiry_idx ON runs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'delayed');
