-- depends: 0024_api_key_scopes
DROP INDEX IF EXISTS runs_finished_idx;
