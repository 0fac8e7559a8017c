"""The loop that runs the workflow engine (scheduler role): woken by the NOTIFY of a step's job run ending (or
of an event a waiting step receives, or of a run ending that frees a concurrency slot), at the next due timer
(a waiting step's, a run's deadline, a scheduled run's start), and polling meanwhile in case a notification was
missed (the listening connection lost, say).

A step's end (the common wake-up, once per step) only needs its progress taken: the other passes (timers,
scheduled and queued runs, deadlines, the next timer) cost more transactions, which would compete with the next
step's dispatch on every edge of a chain. They run on the poll, when a timer is due, when a run ended (its slot
may start a queued run), when a move set a timer, and when a NOTIFY with a payload asks."""

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
    LocalDispatcher,
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
        self._full = True  # the next pass runs every step (see the module's docstring)
        # This process's dispatcher, when it has one (App sets it once the dispatcher exists).
        self.local: LocalDispatcher | None = None
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name="workflow-progress")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        if self._listener is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._listener.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()  # when the next full pass is due at the latest (the poll, or the next timer)
        while True:
            self._wake.clear()
            try:
                await self._listen()
                if self._full or loop.time() >= due:
                    self._full = False
                    due = loop.time() + await self._full_pass()
                elif await self._progress_pass():
                    continue  # a run ended or a timer was set: the full pass, at once
            except DATABASE_ERRORS as exc:
                self._metrics.loop_errors.labels("workflow_progress").inc()
                log.warning("workflow progress pass failed: %r", exc, extra={"action": "workflow_progress_error"})
                await self._drop_listener()
                self._full, due = True, loop.time() + self._poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))

    async def _full_pass(self) -> float:
        """Every pass; returns the seconds until the next full one is due."""
        await self.run_pass()
        left = await next_timer(self._pool, self._now())
        # Not below 50 ms: a timer that cannot fire must not spin the loop.
        return self._poll if left is None else max(0.05, min(self._poll, left))

    async def _progress_pass(self) -> bool:
        """Takes the ended steps' progress; returns whether a full pass is needed now."""
        full = False
        while True:
            taken, changes = await take_progress(self._pool, self._plans, self._batch, self.local)
            if changes.workflow_runs:
                self._on_changes(changes)
            full |= changes.timers or bool(changes.runs_ended)
            if taken < self._batch:
                break
        self._full |= full
        return full

    def _now(self) -> datetime | None:
        return None if self._clock is None else self._clock()

    async def run_pass(self) -> int:
        """Moves workflow runs on until no ended step and no due timer is left; returns how many were taken."""
        total = 0
        steps: list[Callable[[], Awaitable[tuple[int, Changes]]]] = [
            lambda: take_progress(self._pool, self._plans, self._batch, self.local),
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
        await conn.add_listener(CHANNEL, self._notified)
        self._listener = conn

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        """A step's end (no payload) asks for its progress to be taken; anything else for a full pass."""
        self._full |= bool(payload)
        self._wake.set()

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._listener.close()
            self._listener = None
