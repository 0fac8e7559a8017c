-- depends: 0012_workflows
DROP TRIGGER runs_step_run_end ON runs;
DROP FUNCTION strait_note_step_run_end();
DROP TABLE workflow_progress;
DROP INDEX runs_workflow_step_key;
ALTER TABLE runs DROP COLUMN workflow_step_run_id;
DROP TABLE workflow_run_events;
DROP TABLE workflow_step_runs;
DROP TABLE workflow_runs;
