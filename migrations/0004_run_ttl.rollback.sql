-- depends: 0003_schedules
DROP INDEX IF EXISTS runs_expiry_idx;
ALTER TABLE runs DROP COLUMN expires_at;
ALTER TABLE jobs DROP COLUMN run_ttl_ms;
