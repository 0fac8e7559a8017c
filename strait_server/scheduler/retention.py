"""Deletes finished runs older than STRAIT_RETENTION (0: never) and forgets trigger request ids after a day,
in small batches (scheduler role)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from strait_server.faults import DATABASE_ERRORS
from strait_server.store.retention import RetentionStore
from strait_server.tasks import Supervisor, cancel_and_wait
from strait_server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Between two batches of one pass the loop rests at least as long as the last batch took (and at least
# this long), so that a large backlog is worked off at no more than about half of one connection's time.
_MIN_PAUSE = 0.05


class RetentionSweeper:
    def __init__(self, store: RetentionStore, *, retention: timedelta, interval: timedelta,
                 batch_size: int, metrics: Metrics, supervisor: Supervisor) -> None:
        self._metrics = metrics
        self._supervisor = supervisor
        self._store = store
        self._retention = retention
        self._interval = interval.total_seconds()
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_pass()
            except DATABASE_ERRORS as exc:
                self._metrics.loop_errors.labels("retention").inc()
                log.warning("retention pass failed: %r", exc, extra={"action": "retention_error"})
            await asyncio.sleep(self._interval)

    async def run_pass(self) -> int:
        """Deletes batches until one comes back short; returns the number of runs deleted."""
        await self._forget_requests()
        if self._retention <= timedelta(0):
            return 0
        runs = events = 0
        while True:
            started = time.monotonic()
            deleted = await self._store.delete_batch(self._retention, self._batch_size)
            runs += deleted.runs
            events += deleted.events
            if deleted.runs < self._batch_size:
                break
            await asyncio.sleep(max(_MIN_PAUSE, time.monotonic() - started))
        if runs:
            log.info("deleted finished runs past retention", extra={
                "action": "retention", "runs": runs, "events": events})
        return runs

    async def _forget_requests(self) -> None:
        """Trigger request ids and sent events past the time they are remembered."""
        for forget in (self._store.forget_requests, self._store.forget_events):
            # Small rows: batches ten times larger than run batches stay as short.
            while True:
                if await forget(self._batch_size * 10) < self._batch_size * 10:
                    break
                await asyncio.sleep(_MIN_PAUSE)
