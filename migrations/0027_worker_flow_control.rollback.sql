-- depends: 0026_workflow_runs_feed
CREATE OR REPLACE FUNCTION strait_gate(job_id text, concurrency_key text, max_concurrency integer,
                                       max_concurrency_per_key integer, rate_limit_max integer,
                                       execution_window_cron text, execution_mode text, queue text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN execution_mode = 'worker' THEN 'w/' || queue || '/' || job_id
                WHEN max_concurrency_per_key > 0 AND concurrency_key <> '' THEN job_id || '/' || concurrency_key
                WHEN max_concurrency > 0 OR max_concurrency_per_key > 0 OR rate_limit_max > 0
                     OR execution_window_cron <> '' THEN job_id END
$$;
-- Runs of worker jobs queued under a limited gate go back to their route (the limits no longer apply).
UPDATE run_queue q SET gate = strait_run_gate(q.run_id) WHERE q.gate LIKE 'w/%/%/%';
ALTER TABLE run_queue ALTER COLUMN gate TYPE text;
