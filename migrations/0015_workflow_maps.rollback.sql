-- depends: 0014_workflow_waits
DROP INDEX workflow_step_runs_pending_instances;
DELETE FROM workflow_step_runs WHERE map_index >= 0;
ALTER TABLE workflow_step_runs
    DROP CONSTRAINT workflow_step_runs_step_key,
    ADD CONSTRAINT workflow_step_runs_workflow_run_id_step_ref_key UNIQUE (workflow_run_id, step_ref),
    DROP COLUMN map_failed, DROP COLUMN map_done, DROP COLUMN map_started, DROP COLUMN map_total, DROP COLUMN item,
    DROP COLUMN map_index;
