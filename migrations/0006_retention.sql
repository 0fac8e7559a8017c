-- Retention of finished runs, and API rate-limit overrides per project and per API key.
-- depends: 0005_flow_control

-- The retention sweep walks exactly the finished runs it may delete, oldest first (dead_letter runs wait
-- for replay and are never deleted by retention, so they are not in it). The status list is
-- RETAINED_STATUSES in strait_server/store/retention.py. IF NOT EXISTS: on a large runs table an operator
-- may build it beforehand with CREATE INDEX CONCURRENTLY under the same name (see docs/operations.md).
CREATE INDEX IF NOT EXISTS runs_retention_idx ON runs (finish_time)
    WHERE status IN ('completed', 'failed', 'timed_out', 'crashed', 'system_failed', 'canceled', 'expired');
-- Idempotency keys are deleted with their run.
CREATE INDEX IF NOT EXISTS idempotency_keys_run_idx ON idempotency_keys (run_id);

-- Rate limits (requests per window, counted per API key in Redis). NULL: inherit (key -> project ->
-- STRAIT_API_RATE_LIMIT per STRAIT_API_RATE_WINDOW).
ALTER TABLE projects
    ADD COLUMN api_rate_limit_requests integer,
    ADD COLUMN api_rate_limit_window_ms bigint,
    ADD CONSTRAINT projects_api_rate_limit_check CHECK (
        (api_rate_limit_requests IS NULL AND api_rate_limit_window_ms IS NULL)
        OR (api_rate_limit_requests > 0 AND api_rate_limit_window_ms > 0));
ALTER TABLE api_keys
    ADD COLUMN api_rate_limit_requests integer,
    ADD COLUMN api_rate_limit_window_ms bigint,
    ADD CONSTRAINT api_keys_api_rate_limit_check CHECK (
        (api_rate_limit_requests IS NULL AND api_rate_limit_window_ms IS NULL)
        OR (api_rate_limit_requests > 0 AND api_rate_limit_window_ms > 0));
