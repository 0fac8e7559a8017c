-- Cron schedules on jobs.
-- depends: 0002_run_context

ALTER TABLE jobs
    ADD COLUMN cron text NOT NULL DEFAULT '',
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN cron_overlap_policy text NOT NULL DEFAULT 'allow',
    ADD COLUMN next_fire_time timestamptz;
-- The scheduler's tick scans exactly the scheduled jobs, by due time.
CREATE INDEX jobs_next_fire_idx ON jobs (next_fire_time) WHERE cron <> '' AND delete_time IS NULL;

-- ScheduleService.PauseSchedule: the schedule stops firing, the job still takes triggers.
ALTER TABLE jobs ADD COLUMN schedule_paused boolean NOT NULL DEFAULT false;
