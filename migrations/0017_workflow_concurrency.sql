-- Workflow concurrency: at most max_runs running runs per workflow and concurrency key; the others wait
-- queued (or are canceled, by the workflow's strategy).
-- depends: 0016_sub_workflows

-- The run's concurrency key (NULL: its workflow sets no limit).
ALTER TABLE workflow_runs ADD COLUMN concurrency_key text;
-- The queued runs of a key, oldest first: started as slots free up.
CREATE INDEX workflow_runs_queued ON workflow_runs (workflow_id, concurrency_key, create_time, id)
    WHERE status = 'queued';
-- The runs holding a slot.
CREATE INDEX workflow_runs_holding_slots ON workflow_runs (workflow_id, concurrency_key, create_time, id)
    WHERE status IN ('running', 'paused') AND concurrency_key IS NOT NULL;
