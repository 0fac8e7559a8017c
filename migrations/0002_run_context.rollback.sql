-- depends: 0001_core
ALTER TABLE run_leases DROP COLUMN detached;
ALTER TABLE runs DROP COLUMN checkpoint_time, DROP COLUMN checkpoint;
