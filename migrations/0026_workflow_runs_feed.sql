-- The project's workflow-run status changes in commit order, for WorkflowRunService.WatchWorkflowRuns: like
-- run_events for the run feed, each event row carries its project and the id of the transaction that wrote
-- it. Rows written before this migration have neither: the feed, which starts from now, never reads them.
-- The default is set apart from ADD COLUMN so that existing rows are not rewritten.
-- depends: 0025_run_stats

ALTER TABLE workflow_run_events ADD COLUMN project_id text, ADD COLUMN xid xid8;
ALTER TABLE workflow_run_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX workflow_run_events_feed_idx ON workflow_run_events (project_id, xid, workflow_run_id, seq)
    WHERE type = 'run_status';
