-- depends: 0018_workflow_run_timeout
ALTER TABLE workflow_runs DROP COLUMN trace_parent;
