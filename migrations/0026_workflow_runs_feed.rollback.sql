-- depends: 0025_run_stats
DROP INDEX IF EXISTS workflow_run_events_feed_idx;
ALTER TABLE workflow_run_events DROP COLUMN IF EXISTS xid, DROP COLUMN IF EXISTS project_id;
