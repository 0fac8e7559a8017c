-- What a workflow step sets on its job run, and options of a workflow trigger.
-- depends: 0020_workflow_schedules

-- A workflow step's retry policy, carried by its job run (NULL: the job's strategy and delays). Every statement
-- that schedules a retry reads coalesce(run's, job's).
ALTER TABLE runs ADD COLUMN retry_strategy text, ADD COLUMN retry_initial_ms bigint, ADD COLUMN retry_max_ms bigint,
    -- The run's TTL (expires_at) bounds only its wait for a first start (a workflow step's
    -- schedule_to_start_timeout): the claim clears it, so that a retry waiting for its delay does not expire.
    ADD COLUMN ttl_until_start boolean NOT NULL DEFAULT false;

-- A workflow run triggered with a scheduled_time in the future waits 'scheduled' until then (NULL: it started
-- when triggered); the engine's timer pass starts it.
ALTER TABLE workflow_runs ADD COLUMN scheduled_time timestamptz,
    -- The steps the trigger disabled for this run (step_overrides): skipped when they would run.
    ADD COLUMN disabled_steps text[] NOT NULL DEFAULT '{}';
CREATE INDEX workflow_runs_scheduled ON workflow_runs (scheduled_time) WHERE status = 'scheduled';
-- Queued runs of a key start in the order they came to want a slot: a scheduled run from its scheduled time.
DROP INDEX workflow_runs_queued;
CREATE INDEX workflow_runs_queued ON workflow_runs (workflow_id, concurrency_key, coalesce(scheduled_time, create_time), id)
    WHERE status = 'queued';
