-- Run-context service: checkpoints handed to the next attempt, and runs whose endpoint answered 202.
-- depends: 0001_core

ALTER TABLE runs ADD COLUMN checkpoint text, ADD COLUMN checkpoint_time timestamptz;
-- A detached lease belongs to a run completing asynchronously (202 Accepted): only its deadline, which
-- heartbeats extend, ends it; the dispatcher that sent it may come and go.
ALTER TABLE run_leases ADD COLUMN detached boolean NOT NULL DEFAULT false;

-- WatchRun(follow_replays) finds a run's replay.
CREATE INDEX runs_replay_of_idx ON runs (replay_of) WHERE replay_of <> '';
