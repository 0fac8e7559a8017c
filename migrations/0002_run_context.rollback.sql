-- depends: 0001_core
DROP INDEX IF EXISTS runs_replay_of_idx;
ALTER TABLE run_leases DROP COLUMN detached;
ALTER TABLE runs DROP COLUMN checkpoint_time, DROP COLUMN checkpoint;
