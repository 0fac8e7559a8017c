-- The most cost one run may report (ReportCost); 0: the server default (STRAIT_MAX_RUN_COST_MICROUSD).
-- depends: 0009_loss

ALTER TABLE jobs ADD COLUMN max_run_cost_microusd bigint NOT NULL DEFAULT 0;
