-- Sub-workflows: a step that runs another workflow as a child run, in the parent's transaction.
-- depends: 0015_workflow_maps

ALTER TABLE workflow_runs
    -- The run and the step run whose child this run is (NULL: a run triggered by itself).
    ADD COLUMN parent_workflow_run_id text,
    ADD COLUMN parent_step_run_id     text,
    -- How deep under runs triggered by themselves (at most 10).
    ADD COLUMN depth                  smallint NOT NULL DEFAULT 0,
    -- What a run gives its parent step: {ref: output} of its steps without children that completed.
    ADD COLUMN output                 jsonb;
CREATE INDEX workflow_runs_children ON workflow_runs (parent_workflow_run_id) WHERE parent_workflow_run_id IS NOT NULL;

ALTER TABLE workflow_step_runs ADD COLUMN child_workflow_run_id text;

-- A child run that ended reaches its parent's engine like the end of a step's job run.
ALTER TABLE workflow_progress ADD COLUMN child_run_id text;
