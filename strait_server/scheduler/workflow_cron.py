"""Cron schedules of workflows: each tick starts exactly one run of the workflow's current version, whatever the
number of scheduler processes.

A pass locks a batch of due workflows (FOR NO KEY UPDATE SKIP LOCKED: any other scheduler skips them, and
UpdateWorkflow waits), starts each one's run in that same transaction through the engine's start_run (what
TriggerWorkflow uses: the concurrency rules of the workflow apply), moves next_fire_time past now and commits.
The runs and the schedules' advance commit together, so another scheduler sees each workflow either locked or
no longer due; the run's idempotency key cron:<tick> is a second guard. The version is the one current while the
pass holds the workflow's lock. Each workflow's tick runs in a savepoint: a tick refused by the workflow's own
rules (nothing it can run, a key it cannot compute) is skipped, logged, without holding up the others.
Misfire policy: after downtime, only the latest missed tick fires, once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg

from strait_server import schedule
from strait_server.budget import BudgetGuard
from strait_server.errors import StraitError
from strait_server.model import OverlapPolicy
from strait_server.store import workflow_runs as run_sql
from strait_server.store.workflows import DueSchedule, WorkflowStore
from strait_server.telemetry.metrics import Metrics
from strait_server.workflows import admission
from strait_server.workflows.engine import Changes, Plans, cancel_if_open, start_run

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
CANCELED_BY_TICK = "canceled by a newer cron tick"


class WorkflowCron:
    def __init__(self, pool: asyncpg.Pool, store: WorkflowStore, plans: Plans, *,
                 on_changes: Callable[[Changes], None], budgets: BudgetGuard | None = None,
                 metrics: Metrics | None = None) -> None:
        self._pool = pool
        self._store = store
        self._plans = plans
        self._on_changes = on_changes
        self._budgets = budgets
        self._metrics = metrics or Metrics()

    async def next_fire_time(self) -> datetime | None:
        return await self._store.next_fire_time()

    async def fire_due(self, limit: int, clock: Clock | None = None) -> int:
        """One pass: fires every due workflow schedule once (up to `limit` of them). Returns how many were due."""
        changes = Changes()
        async with self._pool.acquire() as conn, conn.transaction():
            # PostgreSQL's clock, so that schedulers on machines with skewed clocks agree (tests inject one).
            now = clock() if clock is not None else await conn.fetchval("SELECT now()")
            due = await self._store.due_schedules(conn, now, limit)
            for workflow in due:
                changes.add(await self._fire(conn, workflow, schedule.latest_tick(workflow.cron, workflow.timezone,
                                                                                  now), now))
            await self._store.advance_schedules(
                conn, [(w.id, schedule.next_tick(w.cron, w.timezone, now)) for w in due])
        self._on_changes(changes)
        return len(due)

    async def _fire(self, conn: run_sql.Conn, workflow: DueSchedule, tick: datetime, now: datetime) -> Changes:
        """Inside the pass's transaction: the tick's run of `workflow`, unless the tick is to be skipped."""
        key = f"cron:{tick.isoformat()}"
        if await self._budget_refuses(workflow, tick):
            return Changes()
        others = [r["id"] for r in await conn.fetch(run_sql.OPEN_TOP_LEVEL, workflow.id) if r["idempotency_key"] != key]
        if others and workflow.overlap is OverlapPolicy.SKIP:
            _skipped(workflow, tick, "a run of the workflow has not ended")
            return Changes()
        run_input = json.loads(workflow.input or "{}")  # checked when it was written: a JSON object
        changes = Changes()
        try:
            async with conn.transaction():  # a savepoint: a refused tick leaves nothing behind
                plan = await self._plans.get(conn, workflow.id, workflow.version)
                concurrency_key = admission.key_of(plan, run_input, "schedule_input_json")
                if workflow.overlap is OverlapPolicy.CANCEL_RUNNING:
                    # In id order, as every statement that locks several runs does (no deadlock with the engine).
                    for run_id in others:
                        changes.add(await cancel_if_open(conn, self._plans, run_id, CANCELED_BY_TICK))
                run, repeat, started = await start_run(
                    conn, self._plans, project_id=workflow.project_id, workflow_id=workflow.id,
                    version=workflow.version, run_input=run_input, idempotency_key=key,
                    concurrency_key=concurrency_key)
        except StraitError as exc:
            _skipped(workflow, tick, exc.message)
            return Changes()
        changes.add(started)
        if not repeat:
            # Lag behind the tick, by the same clock that decided it was due.
            self._metrics.schedule_lag.observe(max(0.0, (now - tick).total_seconds()))
            log.info("cron tick started a workflow run", extra={
                "action": "cron_fire", "workflow_id": workflow.id, "workflow_run_id": run.id,
                "version": workflow.version, "tick": tick.isoformat()})
        return changes

    async def _budget_refuses(self, workflow: DueSchedule, tick: datetime) -> bool:
        """The budget rule of every trigger (budget.BudgetGuard): a tick of a project whose budget refuses new
        runs is skipped."""
        if self._budgets is None or await self._budgets.rejects(workflow.project_id) is None:
            return False
        _skipped(workflow, tick, "the project's monthly budget is spent")
        return True


def _skipped(workflow: DueSchedule, tick: datetime, why: str) -> None:
    log.info("cron tick skipped: %s", why, extra={
        "action": "cron_skip", "workflow_id": workflow.id, "tick": tick.isoformat()})
