-- Cron schedules on workflows: each tick starts a run of the workflow's current version. The schedule is an
-- attribute of the workflow, not part of its definition (a change writes no version).
-- depends: 0019_workflow_run_trace

ALTER TABLE workflows
    ADD COLUMN cron text NOT NULL DEFAULT '',
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN cron_overlap_policy text NOT NULL DEFAULT 'allow',
    -- The input of the runs the schedule starts, as the client sent it ('': {}).
    ADD COLUMN schedule_input text NOT NULL DEFAULT '',
    ADD COLUMN next_fire_time timestamptz,
    ADD COLUMN schedule_paused boolean NOT NULL DEFAULT false;
-- The scheduler's pass scans exactly the scheduled workflows, by due time.
CREATE INDEX workflows_next_fire_idx ON workflows (next_fire_time) WHERE cron <> '' AND delete_time IS NULL;

-- The overlap policies (skip, cancel_running) look for a workflow's runs that have not ended, other than child
-- runs of sub-workflow steps.
CREATE INDEX workflow_runs_open_top_level ON workflow_runs (workflow_id, id)
    WHERE status IN ('running', 'paused', 'queued') AND parent_workflow_run_id IS NULL;
