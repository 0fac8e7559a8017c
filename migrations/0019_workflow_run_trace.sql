-- The trace of the call that triggered a workflow run, continued by the job runs of its steps.
-- depends: 0018_workflow_run_timeout

ALTER TABLE workflow_runs ADD COLUMN trace_parent text NOT NULL DEFAULT '';
