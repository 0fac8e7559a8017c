-- depends: 0020_workflow_schedules
DROP INDEX workflow_runs_queued;
CREATE INDEX workflow_runs_queued ON workflow_runs (workflow_id, concurrency_key, create_time, id)
    WHERE status = 'queued';
DROP INDEX workflow_runs_scheduled;
ALTER TABLE workflow_runs DROP COLUMN scheduled_time, DROP COLUMN disabled_steps;
ALTER TABLE runs DROP COLUMN retry_strategy, DROP COLUMN retry_initial_ms, DROP COLUMN retry_max_ms,
    DROP COLUMN ttl_until_start;
