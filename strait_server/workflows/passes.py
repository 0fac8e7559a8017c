"""The passes of the workflow engine's loop (progress_loop.py), one transaction each: the steps whose job runs
ended (or whose events arrived, or whose child runs ended) move their runs on; due timers fire; scheduled runs
whose time came start; queued runs take free concurrency slots; runs past their timeout end."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from strait_server.queue import claim_created
from strait_server.store import workflow_runs as sql
from strait_server.workflows import waits
from strait_server.workflows.engine import Changes, Move, Plans, begin, start_scheduled, step_states
from strait_server.workflows.plan import Plan, StepPlan, StepStatus, step_status_of_run


def job_output(text: str | None) -> Any:
    """A job run's output (text) as the step's output: JSON when it parses, else the text itself."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


async def start_queued(pool: asyncpg.Pool, plans: Plans, limit: int) -> tuple[int, Changes]:
    """One transaction: queued runs start, oldest first per workflow and key, as far as their slots allow.
    (how many started, changes)."""
    changes, started = Changes(), 0
    async with pool.acquire() as conn, conn.transaction():
        for key in await conn.fetch(sql.QUEUED_KEYS, limit):
            await conn.execute(sql.LOCK_CONCURRENCY_KEY, key["workflow_id"], key["concurrency_key"])
            holding = len(await conn.fetch(sql.HOLDING_SLOTS, key["workflow_id"], key["concurrency_key"]))
            for row in await conn.fetch(sql.OLDEST_QUEUED, key["workflow_id"], key["concurrency_key"], limit):
                run = sql.run_row(row)
                plan = await plans.get(conn, run.workflow_id, run.version)
                if plan.concurrency is not None and holding >= plan.concurrency.max_runs:
                    break
                await conn.execute(sql.SET_RUN_STATUS, run.id, sql.RUNNING)
                move = await begin(conn, plans, dataclasses.replace(run, status=sql.RUNNING), plan, sql.QUEUED)
                changes.add(move.changes)
                holding, started = holding + 1, started + 1
    return started, changes


class LocalDispatcher(Protocol):
    """A dispatcher in the engine's process, which takes job runs that a move started as the move commits."""

    owner: str

    def direct_room(self) -> int:
        """How many runs it takes that way now (0: none; it is busy or stopping)."""
        ...


async def take_progress(pool: asyncpg.Pool, plans: Plans, limit: int,
                        local: LocalDispatcher | None = None) -> tuple[int, Changes]:
    """One transaction: up to `limit` ended step job runs, and the moves they cause. (count taken, changes).
    `pool` may commit without waiting for the WAL flush: a move lost in a crash takes the progress rows it
    deleted with it (committed before it), so it is made again. With a `local` dispatcher, the job runs the
    moves started are claimed for it in the same transaction (Changes.claimed), so that the next step of a
    chain is not a wake-up and a claim away (the latency between steps)."""
    changes = Changes()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(sql.TAKE_PROGRESS, limit)
        if not rows:
            return 0, changes
        by_run: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            by_run[r["workflow_run_id"]].append(r)
        for run, steps in await _lock_with_steps(conn, by_run):
            plan = await plans.get(conn, run.workflow_id, run.version)
            move = Move(conn, run, plan, steps, plans)
            mine = by_run[run.id]
            await move.steps_ended([_ended(r, plan) for r in mine if r["map_index"] < 0],
                                   [_instance_ended(r, plan) for r in mine if r["map_index"] >= 0])
            changes.add(move.changes)
        if local is not None and changes.job_runs and (room := local.direct_room()) > 0:
            changes.claim_started_ns = time.time_ns()
            changes.claimed = await claim_created(conn, local.owner, [r.id for r in changes.job_runs], room)
    return len(rows), changes


def _ended(row: Any, plan: Plan) -> tuple[str, str, StepStatus, StepStatus, Any, str]:
    """A progress row as a step run that ended: its job run ended, an event it waited for arrived, or its child
    run ended."""
    ref, step_run_id = row["step_ref"], row["id"]
    if row["event_id"] is not None:
        return ref, step_run_id, StepStatus.WAITING, StepStatus.COMPLETED, row["event_payload"], ""
    if row["child_run_id"] is not None:
        status = StepStatus.FAILED if row["child_status"] == sql.TIMED_OUT else StepStatus(row["child_status"])
        return ref, step_run_id, StepStatus.RUNNING, status, row["child_output"], row["child_error"] or ""
    return (ref, step_run_id, StepStatus.RUNNING, step_status_of_run(row["run_status"]), job_output(row["output"]),
            _job_run_error(row, plan))


def _instance_ended(row: Any, plan: Plan) -> tuple[str, str, StepStatus, Any, str]:
    """A progress row of a map instance: its job run ended, or (a map of a sub_workflow step) its child run."""
    if row["child_run_id"] is not None:
        child = StepStatus.FAILED if row["child_status"] == sql.TIMED_OUT else StepStatus(row["child_status"])
        output = row["child_output"] if child is StepStatus.COMPLETED else None
        return row["step_ref"], row["id"], child, output, row["child_error"] or ""
    status = step_status_of_run(row["run_status"])
    return (row["step_ref"], row["id"], status, job_output(row["output"]) if status is StepStatus.COMPLETED else None,
            _job_run_error(row, plan))


def _job_run_error(row: Any, plan: Plan) -> str:
    """The error of a step's (or map instance's) job run: a run that expired under the step's
    schedule_to_start_timeout says that it never started."""
    limit = plan.steps[row["step_ref"]].schedule_to_start_ms
    if row["run_status"] == sql.EXPIRED and limit is not None:
        return f"not_started: its job run was not started within {limit / 1000:g}s"
    return str(row["error"] or "")


async def _lock_with_steps(conn: sql.Conn, run_ids: Iterable[str]
                           ) -> list[tuple[sql.WorkflowRunRow, list[sql.StepState]]]:
    """The open ones of these runs, locked (in id order, so that moves cannot deadlock), with their steps."""
    runs = [sql.run_row(r) for r in await conn.fetch(sql.LOCK_RUNS, sorted(run_ids))]
    runs = [run for run in runs if run.status in sql.OPEN]
    if not runs:
        return []
    steps = await step_states(conn, [run.id for run in runs])
    return [(run, steps[run.id]) for run in runs]


async def fire_timers(pool: asyncpg.Pool, plans: Plans, now: datetime | None, limit: int) -> tuple[int, Changes]:
    """One transaction: the waiting steps whose timer is due (of up to `limit` runs) end: sleeps complete,
    approvals and event waits time out. `now`: a clock of the caller's (None: the database's)."""
    changes = Changes()
    async with pool.acquire() as conn, conn.transaction():
        run_ids = [r["workflow_run_id"] for r in await conn.fetch(sql.DUE_TIMERS, now, limit)]
        if not run_ids:
            return 0, changes
        at = now or await conn.fetchval("SELECT now()")
        for run, steps in await _lock_with_steps(conn, run_ids):
            plan = await plans.get(conn, run.workflow_id, run.version)
            due = [s for s in steps if s.status == StepStatus.WAITING and s.wake_time is not None and s.wake_time <= at]
            move = Move(conn, run, plan, steps, plans)
            await move.steps_ended(_timer_fired(plan.steps[s.step_ref], s.id) for s in due)
            changes.add(move.changes)
    return len(run_ids), changes


async def start_due(pool: asyncpg.Pool, plans: Plans, now: datetime | None, limit: int) -> tuple[int, Changes]:
    """One transaction: scheduled runs whose time came (up to `limit`) start, each admitted by its workflow's
    concurrency limit as a new run would be. `now`: a clock of the caller's (None: the database's)."""
    changes = Changes()
    async with pool.acquire() as conn, conn.transaction():
        due = [sql.run_row(r) for r in await conn.fetch(sql.DUE_SCHEDULED, now, limit)]
        # In key order (code points, as QUEUED_KEYS): admission takes each key's lock, and passes that take
        # several take them in one order, so that they cannot deadlock.
        for run in sorted(due, key=lambda r: (r.workflow_id, r.concurrency_key or "", r.id)):
            changes.add(await start_scheduled(conn, plans, run))
    return len(due), changes


async def expire_runs(pool: asyncpg.Pool, plans: Plans, now: datetime | None, limit: int) -> tuple[int, Changes]:
    """One transaction: runs past their workflow's timeout end timed out (open steps, job runs and child
    runs canceled). `now`: a clock of the caller's (None: the database's)."""
    changes = Changes()
    async with pool.acquire() as conn, conn.transaction():
        due = [r["id"] for r in await conn.fetch(sql.DUE_DEADLINES, now, limit)]
        for run, steps in await _lock_with_steps(conn, due):
            if run.status in (sql.RUNNING, sql.PAUSED):
                move = Move(conn, run, await plans.get(conn, run.workflow_id, run.version), steps, plans)
                await move.time_out()
                changes.add(move.changes)
    return len(due), changes


def _timer_fired(step: StepPlan, step_run_id: str) -> tuple[str, str, StepStatus, StepStatus, Any, str]:
    status, error = waits.timer_outcome(step)
    return step.ref, step_run_id, StepStatus.WAITING, status, None, error


async def next_timer(pool: asyncpg.Pool, now: datetime | None) -> float | None:
    """Seconds until the next waiting step's timer is due (None: no timer)."""
    left = await pool.fetchval(sql.NEXT_TIMER, now)
    return None if left is None else max(0.0, left.total_seconds())
