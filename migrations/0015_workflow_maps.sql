-- Map steps: one instance row per item under the step's own row, which counts them.
-- depends: 0014_workflow_waits

ALTER TABLE workflow_step_runs
    -- -1: a step of the definition; 0..n-1: an instance of a map step, for the item at that index.
    ADD COLUMN map_index   integer NOT NULL DEFAULT -1,
    -- An instance's item (the element of the map's list).
    ADD COLUMN item        jsonb,
    -- A map step's instances: how many, started, ended, and failed of those.
    ADD COLUMN map_total   integer NOT NULL DEFAULT 0,
    ADD COLUMN map_started integer NOT NULL DEFAULT 0,
    ADD COLUMN map_done    integer NOT NULL DEFAULT 0,
    ADD COLUMN map_failed  integer NOT NULL DEFAULT 0,
    DROP CONSTRAINT workflow_step_runs_workflow_run_id_step_ref_key,
    -- Steps before instances (map_index -1 first): moves read the steps of a run, not its many instances.
    ADD CONSTRAINT workflow_step_runs_step_key UNIQUE (workflow_run_id, map_index, step_ref);
-- The next instances of a map to start, in item order, without scanning those started already.
CREATE INDEX workflow_step_runs_pending_instances ON workflow_step_runs (workflow_run_id, step_ref, map_index)
    WHERE status = 'pending' AND map_index >= 0;
