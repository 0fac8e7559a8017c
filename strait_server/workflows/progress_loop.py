"""The loop that runs the workflow engine (scheduler role): woken by the NOTIFY of a step's job run ending (or
of an event a waiting step receives), at the next due timer (a waiting step's, a run's deadline, a scheduled
run's start), and polling meanwhile in case a notification was missed (the listening connection lost, say)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from strait_server.faults import DATABASE_ERRORS
from strait_server.tasks import Supervisor, cancel_and_wait
from strait_server.telemetry.metrics import Metrics
from strait_server.workflows.engine import Changes, Plans
from strait_server.workflows.passes import (
    expire_runs,
    fire_timers,
    next_timer,
    start_due,
    start_queued,
    take_progress,
)

log = logging.getLogger(__name__)

CHANNEL = "strait_workflow_progress"


class WorkflowProgress:
    def __init__(self, pool: asyncpg.Pool, database_url: str, plans: Plans, *, on_changes: Callable[[Changes], None],
                 metrics: Metrics, supervisor: Supervisor, poll_interval: float = 1.0, batch: int = 500,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._pool = pool
        self._url = database_url
        self._plans = plans
        self._on_changes = on_changes
        self._metrics = metrics
        self._supervisor = supervisor
        self._poll = poll_interval
        self._batch = batch
        self._clock = clock  # tests move timers' time on; None: the database's clock
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name="workflow-progress")

    def nudge(self) -> None:
        """Look at once (this process ended a step's job run, or started a workflow run)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self._listener is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._listener.close()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            pause = self._poll
            try:
                await self._listen()
                await self.run_pass()
                left = await next_timer(self._pool, self._now())
                if left is not None:  # not below 50 ms: a timer that cannot fire must not spin the loop
                    pause = max(0.05, min(pause, left))
            except DATABASE_ERRORS as exc:
                self._metrics.loop_errors.labels("workflow_progress").inc()
                log.warning("workflow progress pass failed: %r", exc, extra={"action": "workflow_progress_error"})
                await self._drop_listener()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    def _now(self) -> datetime | None:
        return None if self._clock is None else self._clock()

    async def run_pass(self) -> int:
        """Moves workflow runs on until no ended step and no due timer is left; returns how many were taken."""
        total = 0
        steps: list[Callable[[], Awaitable[tuple[int, Changes]]]] = [
            lambda: take_progress(self._pool, self._plans, self._batch),
            lambda: fire_timers(self._pool, self._plans, self._now(), self._batch),
            lambda: start_due(self._pool, self._plans, self._now(), self._batch),
            lambda: start_queued(self._pool, self._plans, self._batch),
            lambda: expire_runs(self._pool, self._plans, self._now(), self._batch)]
        for step in steps:
            while True:
                taken, changes = await step()
                total += taken
                if changes.workflow_runs:
                    self._on_changes(changes)
                if taken < self._batch:
                    break
        return total

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        conn = await asyncpg.connect(self._url)
        await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        self._listener = conn

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._listener.close()
            self._listener = None
