-- depends: 0023_worker_sessions
ALTER TABLE api_keys DROP COLUMN scopes;
