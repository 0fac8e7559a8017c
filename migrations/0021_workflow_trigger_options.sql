-- What a workflow step sets on its job run, and options of a workflow trigger.
-- depends: 0019_workflow_run_trace

-- A workflow step's retry policy, carried by its job run (NULL: the job's strategy and delays). Every statement
-- that schedules a retry reads coalesce(run's, job's).
ALTER TABLE runs ADD COLUMN retry_strategy text, ADD COLUMN retry_initial_ms bigint, ADD COLUMN retry_max_ms bigint,
    -- The run's TTL (expires_at) bounds only its wait for a first start (a workflow step's
    -- schedule_to_start_timeout): the claim clears it, so that a retry waiting for its delay does not expire.
    ADD COLUMN ttl_until_start boolean NOT NULL DEFAULT false;
