"""Recovers runs of dead dispatchers and promotes delayed runs when they become due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

import asyncpg

from strait_server.queue import Queue
from strait_server.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A run whose dispatcher is alive but silent this long past its deadline is taken back too.
DEADLINE_GRACE = timedelta(seconds=30)
# Sweeps between vacuums of the ready queue (every 3 s at the default 1 s sweep interval).
_VACUUM_EVERY = 3


class Sweeper:
    def __init__(self, queue: Queue, *, interval: timedelta, owner_stale_after: timedelta,
                 on_requeued: Callable[[], Awaitable[None]],
                 on_events: Callable[[Iterable[str]], None]) -> None:
        self._queue = queue
        self._interval = interval.total_seconds()
        self._stale = owner_stale_after
        self._on_requeued = on_requeued
        self._on_events = on_events
        self.nudge = asyncio.Event()  # set when a delayed run is created here, to re-read the next due time
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._recover_loop(), name="recover-sweep"),
                       asyncio.create_task(self._promote_loop(), name="promote-delayed")]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    async def _recover_loop(self) -> None:
        ticks = 0
        while True:
            try:
                expired = await self._queue.expire()
                if expired:
                    self._on_events(expired)
                recovered = await self._queue.recover(self._stale, DEADLINE_GRACE)
                if recovered:
                    self._on_events(recovered)
                    log.warning("recovered runs of lost dispatchers", extra={
                        "action": "recover", "count": len(recovered)})
                    await self._on_requeued()
                ticks += 1
                if ticks % _VACUUM_EVERY == 0:
                    await self._queue.vacuum_queue()
                if ticks % 600 == 0:
                    await self._queue.prune_dispatchers()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("recovery sweep failed: %s", exc, extra={"action": "recover_error"})
            await asyncio.sleep(self._interval)

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
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("promoting delayed runs failed: %s", exc, extra={"action": "promote_error"})
            self.nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.nudge.wait(), wait)
