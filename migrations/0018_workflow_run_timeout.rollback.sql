-- depends: 0017_workflow_concurrency
DROP INDEX workflow_runs_deadlines;
ALTER TABLE workflow_runs DROP COLUMN deadline_time;
