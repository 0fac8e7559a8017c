-- depends: 0015_workflow_maps
DELETE FROM workflow_progress WHERE child_run_id IS NOT NULL;
ALTER TABLE workflow_progress DROP COLUMN child_run_id;
ALTER TABLE workflow_step_runs DROP COLUMN child_workflow_run_id;
DROP INDEX workflow_runs_children;
ALTER TABLE workflow_runs DROP COLUMN output, DROP COLUMN depth, DROP COLUMN parent_step_run_id,
    DROP COLUMN parent_workflow_run_id;
