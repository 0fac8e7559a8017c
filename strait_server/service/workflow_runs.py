"""Starting and canceling workflow runs (TriggerWorkflow, CancelWorkflowRun); the engine's moves after them
are announced like every new run: dispatchers and watchers are woken once the transaction committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from strait_server import errors
from strait_server.budget import BudgetGuard
from strait_server.store.workflow_runs import WorkflowRunRow
from strait_server.store.workflows import WorkflowStore
from strait_server.workflows.engine import Changes, Plans, cancel_run, start_run


class WorkflowRuns:
    def __init__(self, pool: asyncpg.Pool, workflows: WorkflowStore, plans: Plans, budgets: BudgetGuard,
                 on_changes: Callable[[Changes], None]) -> None:
        self._pool = pool
        self._workflows = workflows
        self._plans = plans
        self._budgets = budgets
        self._on_changes = on_changes

    async def trigger(self, project_id: str, *, workflow_id: str, slug: str, version: int,
                      run_input: dict[str, Any], idempotency_key: str) -> tuple[WorkflowRunRow, bool]:
        """A new run of the workflow (of `version`, 0: the current one), or the run its key names."""
        workflow = await self._workflows.get(project_id, workflow_id=workflow_id, slug=slug, version=version)
        if not workflow.attributes.enabled:
            raise errors.FailedPrecondition(f"workflow {workflow.attributes.slug!r} is disabled",
                                            reason="WORKFLOW_DISABLED", subject=workflow.id)
        unsupported = self._plans.of(workflow.id, workflow.version, workflow.definition).unsupported()
        if unsupported:
            raise errors.FailedPrecondition(
                "this workflow uses what runs cannot do yet: " + "; ".join(unsupported[:10]),
                reason="WORKFLOW_NOT_RUNNABLE", subject=workflow.id)
        await self._budgets.require(project_id)
        async with self._pool.acquire() as conn, conn.transaction():
            run, repeat, changes = await start_run(
                conn, self._plans, project_id=project_id, workflow_id=workflow.id, version=workflow.version,
                run_input=run_input, idempotency_key=idempotency_key)
        self._on_changes(changes)
        return run, repeat

    async def cancel(self, project_id: str, run_id: str, reason: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            changes = await cancel_run(conn, self._plans, project_id=project_id, run_id=run_id,
                                       reason=reason or "canceled by request")
        self._on_changes(changes)
