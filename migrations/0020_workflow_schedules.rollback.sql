-- depends: 0019_workflow_run_trace
DROP INDEX workflow_runs_open_top_level;
DROP INDEX workflows_next_fire_idx;
ALTER TABLE workflows DROP COLUMN schedule_paused, DROP COLUMN next_fire_time, DROP COLUMN schedule_input,
    DROP COLUMN cron_overlap_policy, DROP COLUMN timezone, DROP COLUMN cron;
