-- What an API key may do beyond the API itself: "workers:connect" lets it open worker sessions.
-- depends: 0023_worker_sessions

ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{}';
