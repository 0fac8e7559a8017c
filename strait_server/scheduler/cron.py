"""Cron schedules: each tick of a job's schedule creates exactly one run, whatever the number of scheduler
processes.

A scheduler locks the due jobs (FOR NO KEY UPDATE SKIP LOCKED: any other scheduler skips them), creates the
run with the idempotency key cron:<tick> (so a crash between the run and the schedule update, or a second
scheduler that saw the job due, repeats nothing), then moves next_fire_time past now, and commits.
Misfire policy: after downtime, only the latest missed tick fires, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

import asyncpg

from strait_server import schedule
from strait_server.model import Job, NewRun, OverlapPolicy
from strait_server.store.jobs import JobStore
from strait_server.store.runs import RunStore
from strait_server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class CronScheduler:
    def __init__(self, pool: asyncpg.Pool, jobs: JobStore, runs: RunStore, *, interval: timedelta,
                 clock: Clock | None = None, on_events: Callable[[Iterable[str]], None],
                 on_enqueued: Callable[[], Awaitable[None]]) -> None:
        self._pool = pool
        self._jobs = jobs
        self._runs = runs
        self._interval = interval.total_seconds()
        self._clock = clock
        self._on_events = on_events
        self._on_enqueued = on_enqueued
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0  # completed passes, for tests and metrics

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cron-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("cron pass failed: %s", exc, extra={"action": "cron_error"})
            self.ticks += 1
            await asyncio.sleep(self._interval)

    async def fire_due(self) -> int:
        """One pass: fires every due schedule once. Returns how many runs it created."""
        created: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # PostgreSQL's clock, so that schedulers on machines with skewed clocks agree (tests inject one).
            now = self._clock() if self._clock is not None else await conn.fetchval("SELECT now()")
            for job in await self._jobs.due_schedules(conn, now, 100):
                created.extend(await self._fire(job, now))
                await self._jobs.advance_schedule(conn, job.id, schedule.next_tick(job.cron, job.timezone, now))
        if created:
            self._on_events(created)
            await self._on_enqueued()
        return len(created)

    async def _fire(self, job: Job, now: datetime) -> list[str]:
        tick = schedule.latest_tick(job.cron, job.timezone, now)
        if job.cron_overlap_policy is OverlapPolicy.SKIP and await self._runs.has_active(job.id):
            log.info("cron tick skipped: a run is still active", extra={
                "action": "cron_skip", "job_id": job.id, "tick": tick.isoformat()})
            return []
        new = NewRun(idempotency_key=f"cron:{tick.isoformat()}",
                     metadata={"triggered_by": "cron", "scheduled_tick": tick.isoformat()})
        [inserted] = await self._runs.insert(job, [new])
        touched = [] if inserted.repeat else [inserted.run.id]
        if job.cron_overlap_policy is OverlapPolicy.CANCEL_RUNNING:
            # Also on a repeated tick: a scheduler may have died between creating the run and this cancel.
            touched += await self._runs.cancel_others(job.id, inserted.run.id, "canceled by a newer cron tick")
        return touched
