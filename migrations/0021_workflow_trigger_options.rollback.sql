-- depends: 0019_workflow_run_trace
ALTER TABLE runs DROP COLUMN retry_strategy, DROP COLUMN retry_initial_ms, DROP COLUMN retry_max_ms,
    DROP COLUMN ttl_until_start;
