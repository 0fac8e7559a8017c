-- A workflow's timeout: a run still open at its deadline ends timed out.
-- depends: 0017_workflow_concurrency

ALTER TABLE workflow_runs ADD COLUMN deadline_time timestamptz;
CREATE INDEX workflow_runs_deadlines ON workflow_runs (deadline_time)
    WHERE status IN ('running', 'paused') AND deadline_time IS NOT NULL;
