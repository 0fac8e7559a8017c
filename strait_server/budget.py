"""Enforcing project budgets when runs are created (docs/operations.md#budgets).

A project may have a monthly budget in micro-USD and an action: `reject` refuses new runs (triggers, batch
triggers, schedule triggers, replays; cron ticks are skipped) once the month's spend reached the budget;
`notify` only logs and counts it (strait_budget_exhausted_total). Runs report their cost through
RunContextService.ReportCost; spend is summed per calendar month in UTC.

Each process reads a project's budget and spend at most every `ttl_s` seconds, so a trigger made right after
the spend crossed the budget may still be accepted for that long.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from strait_server import errors
from strait_server.store.budgets import Budget, BudgetStore, CostAdded
from strait_server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


def _until_next_month(now: datetime) -> float:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(
        month=first.month + 1)
    return (following - now).total_seconds()


def exhausted_error(project_id: str, budget: Budget) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"the project's monthly budget is spent ({budget.spent} of {budget.budget} micro-USD this month); "
        "new runs are rejected until the month ends or the budget is raised",
        reason="PROJECT_BUDGET_EXHAUSTED", retry_after_seconds=_until_next_month(datetime.now(UTC)),
        quota_subject=f"project:{project_id}")


class BudgetGuard:
    def __init__(self, store: BudgetStore, metrics: Metrics | None = None, ttl_s: float = 2.0) -> None:
        self._store = store
        self._metrics = metrics or Metrics()
        self._ttl = ttl_s
        self._cache: dict[str, tuple[Budget | None, float]] = {}

    async def budget(self, project_id: str) -> Budget | None:
        cached = self._cache.get(project_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        budget = await self._store.read(project_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[project_id] = (budget, now + self._ttl)
        return budget

    async def rejects(self, project_id: str) -> Budget | None:
        """The project's budget when it refuses new runs now, else None."""
        budget = await self.budget(project_id)
        if budget is not None and budget.action == "reject" and budget.exhausted:
            return budget
        return None

    async def require(self, project_id: str) -> None:
        """Raises RESOURCE_EXHAUSTED (reason PROJECT_BUDGET_EXHAUSTED) when new runs are refused."""
        budget = await self.rejects(project_id)
        if budget is not None:
            raise exhausted_error(project_id, budget)

    def forget(self, project_id: str) -> None:
        self._cache.pop(project_id, None)

    async def add_cost(self, run_id: str, attempt: int, cost: int, default_cap: int) -> CostAdded | None:
        """Adds a run's reported cost (None: the attempt is not executing; ResourceExhausted past the run's cap);
        a crossing of the budget is notified and applied in this process at once."""
        added = await self._store.add_cost(run_id, attempt, cost, default_cap)
        if added is not None and added.crossed:
            self._crossed(added.project_id, added.budget)
        return added

    def _crossed(self, project_id: str, budget: Budget) -> None:
        self.forget(project_id)
        self._metrics.budget_exhausted.labels(budget.action).inc()
        log.warning("project monthly budget reached", extra={
            "action": "budget_exhausted", "project_id": project_id, "budget_microusd": budget.budget,
            "spent_microusd": budget.spent, "budget_action": budget.action})
