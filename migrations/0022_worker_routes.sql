-- Runs of worker jobs wait in the ready queue under a route gate, 'w/<queue>/<job id>': the HTTP claim takes
-- only ungated runs, the gated claim finds no job for such a gate and passes it by, and the worker plane
-- claims by the routes its connected workers handle (over run_queue_gate_idx).
-- depends: 0021_workflow_trigger_options

DROP FUNCTION strait_gate(text, text, integer, integer, integer, text);
CREATE FUNCTION strait_gate(job_id text, concurrency_key text, max_concurrency integer,
                            max_concurrency_per_key integer, rate_limit_max integer, execution_window_cron text,
                            execution_mode text, queue text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN execution_mode = 'worker' THEN 'w/' || queue || '/' || job_id
                WHEN max_concurrency_per_key > 0 AND concurrency_key <> '' THEN job_id || '/' || concurrency_key
                WHEN max_concurrency > 0 OR max_concurrency_per_key > 0 OR rate_limit_max > 0
                     OR execution_window_cron <> '' THEN job_id END
$$;
CREATE OR REPLACE FUNCTION strait_run_gate(p_run_id text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT strait_gate(j.id, r.concurrency_key, j.max_concurrency, j.max_concurrency_per_key, j.rate_limit_max,
                       j.execution_window_cron, j.execution_mode, j.queue)
    FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = p_run_id
$$;
