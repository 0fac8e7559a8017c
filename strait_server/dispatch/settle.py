"""Settle buffer: outcomes are written in batches, one statement per flush (round trips are the cost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from strait_server.model import RunStatus
from strait_server.queue import Outcome, Queue
from strait_server.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class SettleBuffer:
    def __init__(self, queue: Queue, owner: str, *, flush_interval_s: float, batch_size: int,
                 on_settled: Callable[[list[Outcome], set[str]], None]) -> None:
        self._queue = queue
        self._owner = owner
        self._interval = flush_interval_s
        self._batch = batch_size
        self._on_settled = on_settled
        self._items: list[Outcome] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="settle-buffer")

    def add(self, outcome: Outcome) -> None:
        self._items.append(outcome)
        self._idle.clear()
        self._has_items.set()
        if len(self._items) >= self._batch:
            self._full.set()

    async def flush(self) -> None:
        """Writes everything buffered so far (used at shutdown)."""
        while self._items:
            await self._flush_once()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._has_items.wait()
            if len(self._items) < self._batch:
                try:
                    await asyncio.wait_for(self._full.wait(), self._interval)
                except TimeoutError:
                    pass
            await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._items = self._items[: self._batch], self._items[self._batch:]
        if not self._items:
            self._has_items.clear()
            self._full.clear()
        if not batch:
            return
        delay = 0.05
        while True:
            try:
                detach = [o for o in batch if o.to_status is RunStatus.EXECUTING]
                final = [o for o in batch if o.to_status is not RunStatus.EXECUTING]
                settled = await self._queue.settle(self._owner, final) if final else set()
                if detach:
                    settled |= await self._queue.detach(self._owner, detach)
                break
            except (asyncpg.PostgresError, OSError) as exc:
                # Keep the outcomes: losing them would leave runs executing until recovery.
                log.warning("settle failed, retrying: %s", exc, extra={"action": "settle_retry"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._on_settled(batch, settled)
