-- The runs that finished in a recent window, per project, for RunService.GetRunStats (and the console's
-- overview built on it). runs_retention_idx cannot serve it: it spans every project and leaves dead_letter
-- runs out. IF NOT EXISTS: on a large runs table an operator may build it beforehand with CREATE INDEX
-- CONCURRENTLY under the same name (see docs/operations.md).
-- depends: 0024_api_key_scopes

CREATE INDEX IF NOT EXISTS runs_finished_idx ON runs (project_id, finish_time) WHERE finish_time IS NOT NULL;
