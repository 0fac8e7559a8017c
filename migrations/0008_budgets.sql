-- Project monthly budgets: runs report their cost, a project's spend is summed per calendar month (UTC).
-- depends: 0007_endpoint_circuits

ALTER TABLE projects
    -- NULL: no budget.
    ADD COLUMN monthly_budget_microusd bigint,
    ADD COLUMN budget_action text NOT NULL DEFAULT 'notify';
ALTER TABLE runs ADD COLUMN cost_microusd bigint NOT NULL DEFAULT 0;

CREATE TABLE project_spend (
    project_id     text NOT NULL,
    month          date NOT NULL,
    spent_microusd bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, month)
);
