"""Cron schedules: each tick of a job's schedule creates exactly one run, whatever the number of scheduler
processes (and each tick of a workflow's schedule starts one workflow run: scheduler/workflow_cron.py, in the
same passes).

A scheduler locks a batch of due jobs (FOR NO KEY UPDATE SKIP LOCKED: any other scheduler skips them),
creates their runs and moves their next_fire_time past now in the same transaction, and commits: another
scheduler sees each job either locked or no longer due. Jobs whose overlap policy looks at their active runs
(skip, cancel_running) are fired one by one with the idempotency key cron:<tick>. A backlog of due jobs is
fired by several transactions side by side. Misfire policy: after downtime, only the latest missed tick
fires, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from strait_server import schedule
from strait_server.budget import BudgetGuard
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import Job, NewRun, OverlapPolicy
from strait_server.scheduler.workflow_cron import WorkflowCron
from strait_server.store.jobs import JobStore
from strait_server.store.runs import RunStore
from strait_server.tasks import Supervisor, cancel_and_wait
from strait_server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Due schedules fired per transaction, and transactions at once while a backlog lasts.
BATCH = 500
PARALLEL_PASSES = 3
# How long a backlog of due schedules may hold back the dispatcher of the same process.
BACKLOG_PRIORITY = timedelta(seconds=2)


class CronScheduler:
    def __init__(self, pool: asyncpg.Pool, jobs: JobStore, runs: RunStore, *, interval: timedelta,
                 clock: Clock | None = None, on_events: Callable[[Iterable[str]], None],
                 on_enqueued: Callable[[], Awaitable[None]], metrics: Metrics | None = None,
                 budgets: BudgetGuard | None = None, supervisor: Supervisor | None = None,
                 workflows: WorkflowCron | None = None) -> None:
        self._pool = pool
        self._workflows = workflows
        self._supervisor = supervisor or Supervisor()
        self._budgets = budgets
        self._metrics = metrics or Metrics()
        self._jobs = jobs
        self._runs = runs
        self._interval = interval.total_seconds()
        self._clock = clock
        self._on_events = on_events
        self._on_enqueued = on_enqueued
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0  # completed passes, for tests and metrics
        # Cleared while a backlog of due schedules is being fired (for at most BACKLOG_PRIORITY): a dispatcher in
        # the same process waits for it before claiming, so that the runs are created on time rather than
        # sharing one CPU with dispatching the first of them.
        self.idle = asyncio.Event()
        self.idle.set()

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name="cron-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _loop(self) -> None:
        while True:
            handled = await self._pass()
            if handled == BATCH:
                self.idle.clear()
                # A long backlog (a million schedules) must not stop this process's dispatching for long.
                release = asyncio.get_running_loop().call_later(BACKLOG_PRIORITY.total_seconds(), self.idle.set)
                try:
                    while handled == BATCH:
                        # A backlog (thousands of schedules on the same tick): passes side by side lock disjoint
                        # jobs, and PostgreSQL writes one batch while this process prepares the next.
                        handled = min(await asyncio.gather(*(self._pass() for _ in range(PARALLEL_PASSES))))
                finally:
                    release.cancel()
                    self.idle.set()
            # After a failed pass, or while other schedulers hold every due job, the next due time is already
            # past: wait at least a little rather than spin.
            until = self._interval if handled < 0 else await self._until_next()
            await asyncio.sleep(until if until > 0 else 0.05)

    async def _pass(self) -> int:
        try:
            handled = await self.fire_due()
        except DATABASE_ERRORS as exc:
            self._metrics.loop_errors.labels("cron").inc()
            log.warning("cron pass failed: %r", exc, extra={"action": "cron_error"})
            handled = -1
        except Exception:
            # A bug, or a row nobody foresaw: a restart would meet it again, so the pass is retried (and counted)
            # rather than the process stopped, which would stop every other schedule with it.
            self._metrics.loop_errors.labels("cron").inc()
            log.exception("cron pass failed unexpectedly", extra={"action": "cron_error"})
            handled = -1
        self.ticks += 1
        return handled

    async def _until_next(self) -> float:
        """Sleep until the next schedule is due (at most one interval, to see new and changed schedules),
        so that a tick fires on time rather than up to an interval late."""
        if self._clock is not None:
            return self._interval  # an injected clock does not move with real time
        try:
            times = [await self._jobs.next_fire_time()]
            if self._workflows is not None:
                times.append(await self._workflows.next_fire_time())
        except DATABASE_ERRORS:
            return self._interval
        due = min((t for t in times if t is not None), default=None)
        if due is None:
            return self._interval
        return max(0.0, min(self._interval, (due - datetime.now(UTC)).total_seconds()))

    async def fire_due(self) -> int:
        """One pass: fires every due schedule once (up to BATCH jobs, and up to BATCH workflows, each in a
        transaction of their own). Returns how many were due (the larger count)."""
        handled = await self._fire_due_jobs()
        if self._workflows is not None:
            handled = max(handled, await self._workflows.fire_due(BATCH, self._clock))
        return handled

    async def _fire_due_jobs(self) -> int:
        created: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # PostgreSQL's clock, so that schedulers on machines with skewed clocks agree (tests inject one).
            now = self._clock() if self._clock is not None else await conn.fetchval("SELECT now()")
            due = await self._jobs.due_schedules(conn, now, BATCH)
            ticks = {job.id: schedule.latest_tick(job.cron, job.timezone, now) for job in due}
            # Jobs that allow overlap fire in one statement; the others look at their active runs first.
            allowed = [job for job in due if not await self._budget_refuses(job.project_id, job.id, ticks[job.id])]
            plain = [job.id for job in allowed if job.overlap is OverlapPolicy.ALLOW]
            if plain:
                fired = await self._runs.fire_scheduled(conn, [(j, ticks[j].isoformat()) for j in plain])
                for run_id, job_id in fired:
                    created.append(run_id)
                    # Lag behind the tick, by the same clock that decided it was due.
                    self._metrics.schedule_lag.observe(max(0.0, (now - ticks[job_id]).total_seconds()))
            if len(plain) < len(allowed):
                for job in await self._jobs.by_ids(
                        conn, [j.id for j in allowed if j.overlap is not OverlapPolicy.ALLOW]):
                    created.extend(await self._fire(job, now))
            await self._jobs.advance_schedules(
                conn, [(job.id, schedule.next_tick(job.cron, job.timezone, now)) for job in due])
        if created:
            self._on_events(created)
            await self._on_enqueued()
        return len(due)

    async def _budget_refuses(self, project_id: str, job_id: str, tick: datetime) -> bool:
        """The budget rule of every trigger (budget.BudgetGuard), with the same freshness: a tick of a project
        whose budget refuses new runs is skipped."""
        if self._budgets is None or await self._budgets.rejects(project_id) is None:
            return False
        log.info("cron tick skipped: the project's monthly budget is spent", extra={
            "action": "cron_skip", "job_id": job_id, "tick": tick.isoformat()})
        return True

    async def _fire(self, job: Job, now: datetime) -> list[str]:
        tick = schedule.latest_tick(job.cron, job.timezone, now)
        if job.cron_overlap_policy is OverlapPolicy.SKIP and await self._runs.has_active(job.id):
            log.info("cron tick skipped: a run is still active", extra={
                "action": "cron_skip", "job_id": job.id, "tick": tick.isoformat()})
            return []
        new = NewRun(idempotency_key=f"cron:{tick.isoformat()}",
                     metadata={"triggered_by": "cron", "scheduled_tick": tick.isoformat()})
        [inserted] = await self._runs.insert(job, [new])
        if not inserted.repeat:
            # Lag behind the tick, by the same clock that decided it was due.
            self._metrics.schedule_lag.observe(max(0.0, (now - tick).total_seconds()))
        touched = [] if inserted.repeat else [inserted.run.id]
        if job.cron_overlap_policy is OverlapPolicy.CANCEL_RUNNING:
            # Also on a repeated tick: a scheduler may have died between creating the run and this cancel.
            touched += await self._runs.cancel_others(job.id, inserted.run.id, "canceled by a newer cron tick")
        return touched
