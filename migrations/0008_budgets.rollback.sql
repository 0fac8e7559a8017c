-- depends: 0007_endpoint_circuits
DROP TABLE IF EXISTS project_spend;
ALTER TABLE runs DROP COLUMN cost_microusd;
ALTER TABLE projects DROP COLUMN budget_action, DROP COLUMN monthly_budget_microusd;
