-- depends: 0013_workflow_runs
DELETE FROM workflow_progress WHERE run_id IS NULL;
ALTER TABLE workflow_progress DROP COLUMN event_id, ALTER COLUMN run_id SET NOT NULL;
DROP TABLE event_waits;
DROP TABLE events;
DROP INDEX workflow_step_runs_timers;
ALTER TABLE workflow_step_runs DROP COLUMN wake_time, DROP COLUMN waiting_reason;
