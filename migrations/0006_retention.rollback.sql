-- depends: 0005_flow_control
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_api_rate_limit_check,
    DROP COLUMN api_rate_limit_window_ms, DROP COLUMN api_rate_limit_requests;
ALTER TABLE projects DROP CONSTRAINT IF EXISTS projects_api_rate_limit_check,
    DROP COLUMN api_rate_limit_window_ms, DROP COLUMN api_rate_limit_requests;
DROP INDEX IF EXISTS idempotency_keys_run_idx;
DROP INDEX IF EXISTS runs_retention_idx;
