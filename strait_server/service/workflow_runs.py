"""Starting, canceling and operating workflow runs (TriggerWorkflow, CancelWorkflowRun, approvals, steps ended
by hand) and sending events to their waits; the engine's moves after them are announced like every new run:
dispatchers and watchers are woken once the transaction committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from strait_server import errors
from strait_server.budget import BudgetGuard
from strait_server.store.sent_events import Sent, SentEventStore
from strait_server.store.workflow_runs import StepRunRow, WorkflowRunRow, WorkflowRunStore
from strait_server.store.workflows import WorkflowStore
from strait_server.telemetry.tracing import current_traceparent
from strait_server.workflows import admission, waits
from strait_server.workflows.engine import Changes, Move, Plans, cancel_run, locked_move, start_run
from strait_server.workflows.plan import Plan, StepStatus


class WorkflowRuns:
    def __init__(self, pool: asyncpg.Pool, workflows: WorkflowStore, plans: Plans, budgets: BudgetGuard,
                 on_changes: Callable[[Changes], None]) -> None:
        self._pool = pool
        self._workflows = workflows
        self._plans = plans
        self._budgets = budgets
        self._on_changes = on_changes

    async def trigger(self, project_id: str, *, workflow_id: str, slug: str, version: int,
                      run_input: dict[str, Any], idempotency_key: str, scheduled_time: datetime | None = None,
                      step_overrides: Sequence[tuple[str, bool]] = ()) -> tuple[WorkflowRunRow, bool]:
        """A new run of the workflow (of `version`, 0: the current one), or the run its key names. Its steps
        start at `scheduled_time` (None: now); `step_overrides` (ref, enabled) must name steps of the version
        (else INVALID_ARGUMENT on step_overrides[i].ref, nothing written)."""
        workflow = await self._workflows.get(project_id, workflow_id=workflow_id, slug=slug, version=version)
        if not workflow.attributes.enabled:
            raise errors.FailedPrecondition(f"workflow {workflow.attributes.slug!r} is disabled",
                                            reason="WORKFLOW_DISABLED", subject=workflow.id,
                                            violation_type="WORKFLOW_STATE")
        plan = self._plans.of(workflow.id, workflow.version, workflow.definition)
        disabled = _disabled_steps(plan, step_overrides)
        key = admission.key_of(plan, run_input)
        await self._budgets.require(project_id)
        async with self._pool.acquire() as conn, conn.transaction():
            run, repeat, changes = await start_run(
                conn, self._plans, project_id=project_id, workflow_id=workflow.id, version=workflow.version,
                run_input=run_input, idempotency_key=idempotency_key, concurrency_key=key,
                trace_parent=current_traceparent(), scheduled_time=scheduled_time, disabled_steps=disabled)
        self._on_changes(changes)
        return run, repeat

    async def cancel(self, project_id: str, run_id: str, reason: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            changes = await cancel_run(conn, self._plans, project_id=project_id, run_id=run_id,
                                       reason=reason or "canceled by request")
        self._on_changes(changes)

    async def decide_approval(self, project_id: str, run_id: str, ref: str, approver: waits.Approver, *,
                              approved: bool, text: str) -> None:
        """ApproveStep / RejectStep."""
        await self._move(project_id, run_id, lambda move: move.decide_approval(ref, approver, approved, text))

    async def complete_step(self, project_id: str, run_id: str, ref: str, output: Any) -> None:
        await self._move(project_id, run_id, lambda move: move.force(ref, StepStatus.COMPLETED, output, ""))

    async def skip_step(self, project_id: str, run_id: str, ref: str, reason: str) -> None:
        await self._move(project_id, run_id, lambda move: move.force(ref, StepStatus.SKIPPED, None, reason))

    async def pause(self, project_id: str, run_id: str) -> None:
        await self._move(project_id, run_id, lambda move: move.pause())

    async def resume(self, project_id: str, run_id: str) -> None:
        await self._move(project_id, run_id, lambda move: move.resume())

    async def graph(self, store: WorkflowRunStore, project_id: str,
                    run_id: str) -> tuple[WorkflowRunRow, Plan, list[StepRunRow]]:
        """The run, the plan of its version and its steps (in definition order): GetWorkflowRunGraph."""
        run = await store.get(project_id, run_id)
        async with self._pool.acquire() as conn:
            plan = await self._plans.get(conn, run.workflow_id, run.version)
        return run, plan, await store.steps(project_id, run_id)

    async def has_maps(self, run: WorkflowRunRow) -> bool:
        """Whether the run's version has a map step (a watch of a run without one never reads map counts)."""
        async with self._pool.acquire() as conn:
            return (await self._plans.get(conn, run.workflow_id, run.version)).has_maps

    async def retry_step(self, project_id: str, run_id: str, ref: str) -> None:
        await self._move(project_id, run_id, lambda move: move.retry(ref), reopen=True)

    async def replay_subtree(self, project_id: str, run_id: str, ref: str) -> None:
        await self._move(project_id, run_id, lambda move: move.replay(ref), reopen=True)

    async def _move(self, project_id: str, run_id: str, action: Callable[[Move], Awaitable[None]], *,
                    reopen: bool = False) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            move = await locked_move(conn, self._plans, project_id=project_id, run_id=run_id, reopen=reopen)
            await action(move)
        self._on_changes(move.changes)


def _disabled_steps(plan: Plan, overrides: Sequence[tuple[str, bool]]) -> list[str]:
    """The steps the overrides disable, in definition order; INVALID_ARGUMENT for a ref that names no step of
    the version (its definition's steps and on_failure_step)."""
    v = errors.Violations()
    for i, (ref, _) in enumerate(overrides):
        if ref not in plan.steps:
            v.add(f"step_overrides[{i}].ref", f"{ref!r} is not a step of this workflow version")
    v.raise_if_any()
    off = {ref for ref, enabled in overrides if not enabled}
    return [ref for ref in [*plan.order, plan.on_failure] if ref in off]


async def send_event(store: SentEventStore, project_id: str, key: str, payload: Any, idempotency_key: str) -> Sent:
    """Stores the event and hands it to the matching waits (the engine completes them after the commit)."""
    return await store.send(project_id, key, payload, idempotency_key, waits.matches)
