-- Flow control for worker jobs. A worker job with limits (concurrency, per-key concurrency, a rate limit or an
-- execution window) queues its runs under 'w/<queue>/<job id>/<key>' (the key empty unless the job limits
-- runs per key): the route's plain claim and a trigger's direct handoff match only 'w/<queue>/<job id>', and
-- the worker plane's gated claim finds a route's gates by prefix. Byte order ("C") makes a prefix a range
-- of the gate index whatever the database's collation, and is what the claimers' round-robin cursors assume.
-- depends: 0026_workflow_runs_feed

ALTER TABLE run_queue ALTER COLUMN gate TYPE text COLLATE "C";

CREATE OR REPLACE FUNCTION strait_gate(job_id text, concurrency_key text, max_concurrency integer,
                                       max_concurrency_per_key integer, rate_limit_max integer,
                                       execution_window_cron text, execution_mode text, queue text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN execution_mode = 'worker' THEN
                    'w/' || queue || '/' || job_id
                    || CASE WHEN max_concurrency > 0 OR max_concurrency_per_key > 0 OR rate_limit_max > 0
                                 OR execution_window_cron <> ''
                            THEN '/' || CASE WHEN max_concurrency_per_key > 0 THEN concurrency_key ELSE '' END
                            ELSE '' END
                WHEN max_concurrency_per_key > 0 AND concurrency_key <> '' THEN job_id || '/' || concurrency_key
                WHEN max_concurrency > 0 OR max_concurrency_per_key > 0 OR rate_limit_max > 0
                     OR execution_window_cron <> '' THEN job_id END
$$;
