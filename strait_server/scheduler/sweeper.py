"""Recovers runs of dead dispatchers and promotes delayed runs when they become due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

from strait_server.faults import DATABASE_ERRORS
from strait_server.queue import Queue
from strait_server.tasks import Supervisor, cancel_and_wait

log = logging.getLogger(__name__)

# A run whose dispatcher is alive but silent this long past its deadline is taken back too.
DEADLINE_GRACE = timedelta(seconds=30)
# Sweeps between vacuums of the ready queue (every 3 s at the default 1 s sweep interval).
_VACUUM_EVERY = 3


class Sweeper:
    def __init__(self, queue: Queue, *, interval: timedelta, owner_stale_after: timedelta, max_lost_requeues: int,
                 on_requeued: Callable[[], Awaitable[None]], on_events: Callable[[Iterable[str]], None],
                 supervisor: Supervisor) -> None:
        self._queue = queue
        self._interval = interval.total_seconds()
        self._stale = owner_stale_after
        self._max_lost = max_lost_requeues
        self._on_requeued = on_requeued
        self._on_events = on_events
        self._supervisor = supervisor
        self.nudge = asyncio.Event()  # set when a delayed run is created here, to re-read the next due time
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [self._supervisor.spawn(self._recover_loop(), name="recover-sweep"),
                       self._supervisor.spawn(self._promote_loop(), name="promote-delayed")]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    def _failed(self, loop: str, what: str, exc: BaseException) -> None:
        self._queue.metrics.loop_errors.labels(loop).inc()
        log.warning("%s failed: %r", what, exc, extra={"action": f"{loop}_error"})

    async def _recover_loop(self) -> None:
        ticks = 0
        while True:
            try:
                await self.sweep(vacuum=ticks % _VACUUM_EVERY == _VACUUM_EVERY - 1, prune=ticks % 600 == 599)
            except DATABASE_ERRORS as exc:
                self._failed("recover", "recovery sweep", exc)
            ticks += 1
            await asyncio.sleep(self._interval)

    async def sweep(self, *, vacuum: bool = False, prune: bool = False) -> None:
        """One pass: expires runs past their TTL, recovers runs of dead dispatchers, tidies the queue."""
        expired = await self._queue.expire()
        if expired:
            self._on_events(expired)
        recovered = await self._queue.recover(self._stale, DEADLINE_GRACE, self._max_lost)
        if recovered:
            self._on_events(recovered)
            log.warning("recovered runs of lost dispatchers", extra={"action": "recover", "count": len(recovered)})
            await self._on_requeued()
        if vacuum:
            await self._queue.vacuum_queue()
        if prune:
            await self._queue.prune_dispatchers()

    async def _promote_loop(self) -> None:
        while True:
            wait = self._interval
            try:
                promoted = await self._queue.promote_delayed()
                if promoted:
                    self._on_events(promoted)
                    await self._on_requeued()
                next_in = await self._queue.next_delayed_in()
                if next_in is not None:
                    wait = max(0.005, min(wait, next_in.total_seconds()))
            except DATABASE_ERRORS as exc:
                self._failed("promote", "promoting delayed runs", exc)
            self.nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nudge.wait(), wait)
