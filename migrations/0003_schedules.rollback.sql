-- depends: 0002_run_context
DROP INDEX IF EXISTS jobs_next_fire_idx;
ALTER TABLE jobs DROP COLUMN schedule_paused, DROP COLUMN next_fire_time, DROP COLUMN cron_overlap_policy, DROP COLUMN timezone,
    DROP COLUMN cron;
