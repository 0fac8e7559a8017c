"""Project budgets: the monthly budget and action of a project, its month-to-date spend, run costs."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from strait_server.errors import ResourceExhausted
from strait_server.model import EventType
from strait_server.store.fragments import insert_events

# Spend is kept per calendar month in UTC.
_MONTH = "date_trunc('month', now() AT TIME ZONE 'UTC')::date"


def month_spend_of(project: str) -> str:
    """SQL: the month-to-date spend of the `projects` row named `project` in the query (0 when none)."""
    return (f"coalesce((SELECT s.spent_microusd FROM project_spend s WHERE s.project_id = {project}.id"
            f" AND s.month = {_MONTH}), 0)")


READ = f"""
SELECT p.monthly_budget_microusd AS budget, p.budget_action AS action, {month_spend_of("p")} AS spent
FROM projects p WHERE p.id = $1
"""

ADD_COST = f"""
WITH r AS (
    UPDATE runs SET cost_microusd = cost_microusd + $3, update_time = now(), event_seq = event_seq + 1
    WHERE id = $1 AND status = 'executing' AND attempt = $2
      -- Within what one run may report: a run token must not be able to spend the project's whole budget.
      AND cost_microusd + $3 <= (SELECT coalesce(nullif(j.max_run_cost_microusd, 0), $4) FROM jobs j
                                 WHERE j.id = runs.job_id)
    RETURNING id, project_id, job_id, event_seq, attempt, cost_microusd
), ev AS (
    -- Like every run-context call, a report is an event watchers see.
    {insert_events(
        "r", EventType.COST,
        data="jsonb_build_object('cost_microusd', $3::bigint, 'run_cost_microusd', cost_microusd)")}
), s AS (
    INSERT INTO project_spend AS s (project_id, month, spent_microusd)
    SELECT project_id, {_MONTH}, $3 FROM r
    ON CONFLICT (project_id, month) DO UPDATE SET spent_microusd = s.spent_microusd + EXCLUDED.spent_microusd
    RETURNING project_id, spent_microusd
)
SELECT r.project_id, r.cost_microusd, s.spent_microusd, p.monthly_budget_microusd AS budget,
    p.budget_action AS action
FROM r JOIN s ON s.project_id = r.project_id JOIN projects p ON p.id = r.project_id
"""
"""$1 run, $2 attempt (it must be executing), $3 cost to add, $4 the server's cap per run (for jobs without one).
No row: the attempt is not executing, or the cost would pass the run's cap (see RUN_COST_CAP)."""

RUN_COST_CAP = """
SELECT r.cost_microusd, coalesce(nullif(j.max_run_cost_microusd, 0), $3) AS cap
FROM runs r JOIN jobs j ON j.id = r.job_id
WHERE r.id = $1 AND r.status = 'executing' AND r.attempt = $2
"""
"""$1 run, $2 attempt, $3 the server's cap per run. A row: the attempt is executing (a refused cost passed the cap)."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    budget: int | None  # micro-USD per month; None: no budget
    action: str  # "notify" or "reject"
    spent: int  # this month, micro-USD

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.spent >= self.budget


@dataclass(frozen=True, kw_only=True)
class CostAdded:
    project_id: str
    run_cost: int
    budget: Budget
    crossed: bool  # this cost took the month's spend to or past the budget


class BudgetStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read(self, project_id: str) -> Budget | None:
        row = await self._pool.fetchrow(READ, project_id)
        return None if row is None else Budget(budget=row["budget"], action=row["action"], spent=row["spent"])

    async def add_cost(self, run_id: str, attempt: int, cost: int, default_cap: int) -> CostAdded | None:
        """None: the attempt is not executing. Raises ResourceExhausted when the cost would take the run past
        what it may report."""
        row = await self._pool.fetchrow(ADD_COST, run_id, attempt, cost, default_cap)
        if row is None:
            capped = await self._pool.fetchrow(RUN_COST_CAP, run_id, attempt, default_cap)
            if capped is not None:
                raise ResourceExhausted(
                    f"the run may report at most {capped['cap']:,} micro-USD in all (the job's "
                    f"max_run_cost_microusd); it has reported {capped['cost_microusd']:,}",
                    reason="RUN_COST_CAP", quota_subject=f"run:{run_id}")
            return None
        budget = Budget(budget=row["budget"], action=row["action"], spent=row["spent_microusd"])
        crossed = budget.budget is not None and budget.spent >= budget.budget > budget.spent - cost
        return CostAdded(project_id=row["project_id"], run_cost=row["cost_microusd"], budget=budget,
                         crossed=crossed)
