-- depends: 0004_run_ttl
DROP TABLE IF EXISTS debounce_runs;
DROP TABLE IF EXISTS job_rate_windows;
DROP FUNCTION IF EXISTS strait_run_gate(text);
DROP FUNCTION IF EXISTS strait_gate(text, text, integer, integer, integer, text);
ALTER TABLE run_leases DROP COLUMN concurrency_key, DROP COLUMN job_id;
DROP INDEX IF EXISTS run_queue_gate_idx;
DROP INDEX IF EXISTS run_queue_claim_idx;
ALTER TABLE run_queue DROP COLUMN gate;
CREATE INDEX run_queue_claim_idx ON run_queue (priority DESC, run_at, run_id);
ALTER TABLE runs DROP COLUMN wait_reason, DROP COLUMN concurrency_key;
ALTER TABLE jobs DROP COLUMN debounce_window_ms, DROP COLUMN dedup_window_ms, DROP COLUMN poison_pill_threshold, DROP COLUMN execution_window_cron,
    DROP COLUMN rate_limit_window_ms, DROP COLUMN rate_limit_max, DROP COLUMN max_concurrency_per_key,
    DROP COLUMN max_concurrency;
