-- depends: 0009_loss
ALTER TABLE jobs DROP COLUMN max_run_cost_microusd;
