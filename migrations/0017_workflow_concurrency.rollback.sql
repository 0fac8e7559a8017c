-- depends: 0016_sub_workflows
DROP INDEX workflow_runs_holding_slots;
DROP INDEX workflow_runs_queued;
ALTER TABLE workflow_runs DROP COLUMN concurrency_key;
