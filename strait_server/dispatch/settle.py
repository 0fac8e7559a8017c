"""Settle buffer: outcomes are written in batches, one statement per flush (round trips are the cost).

Settles commit without waiting for the WAL flush (see App.start), so a PostgreSQL crash can lose the last of
them. The buffer keeps what it settled until a durable commit that started later (its owner's heartbeat, see
heartbeat) has returned, which puts the earlier ones on disk too; when the heartbeat shows that the database
server restarted in between, those outcomes are written again. Writing one twice is harmless: a settle only
applies to the attempt its owner (an HTTP dispatcher or a worker hub) still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from strait_server.faults import DATABASE_ERRORS, statement_refused
from strait_server.model import RunStatus
from strait_server.queue import Outcome, Queue
from strait_server.tasks import Supervisor, cancel_and_wait

log = logging.getLogger(__name__)

# Settled outcomes kept for re-writing, at most: a heartbeat that keeps failing must not grow memory without end.
MAX_UNCONFIRMED = 100_000


class SettleBuffer:
    def __init__(self, queue: Queue, owner: str, *, flush_interval_s: float, batch_size: int,
                 on_settled: Callable[[list[Outcome], set[str]], None], supervisor: Supervisor) -> None:
        self._queue = queue
        self._owner = owner
        self._interval = flush_interval_s
        self._batch = batch_size
        self._on_settled = on_settled
        self._supervisor = supervisor
        self._items: list[Outcome] = []
        self._has_items = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Outcomes written but perhaps not yet on disk, and how many were ever appended (for marks).
        self._unconfirmed: deque[Outcome] = deque(maxlen=MAX_UNCONFIRMED)
        self._appended = 0
        self._database_started: datetime | None = None  # when the database server started, at the last heartbeat

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._run(), name="settle-buffer")

    def add(self, outcome: Outcome, *, at_once: bool = False) -> None:
        """Buffers an outcome. `at_once`: write it without waiting for others to join it (a run waits for the
        slot its run frees, and a slot is only free once the outcome is written)."""
        self._items.append(outcome)
        self._has_items.set()
        if at_once or len(self._items) >= self._batch:
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

    async def heartbeat(self, beat: Callable[[], Awaitable[datetime]]) -> None:
        """Runs `beat`, the owner's heartbeat: a durable commit that returns when the database server started.
        What was settled before it started is then on disk, unless the server restarted since the last beat:
        then it is written again (and confirmed by the next beat)."""
        mark = self.mark()
        started = await beat()
        if self._database_started is not None and started != self._database_started:
            log.warning("the database server restarted; re-writing recent outcomes",
                        extra={"action": "database_restarted", "owner": self._owner})
            await self.rewrite_unconfirmed()
            self._database_started = started
            return
        self._database_started = started
        self.confirm(mark)

    def mark(self) -> int:
        """Taken before a durable commit starts: confirm(mark) once it has returned."""
        return self._appended

    def confirm(self, mark: int) -> None:
        """Outcomes written before `mark` are on disk: they need not be kept."""
        drop = len(self._unconfirmed) - (self._appended - mark)
        for _ in range(max(0, drop)):
            self._unconfirmed.popleft()

    async def rewrite_unconfirmed(self) -> int:
        """The database server restarted: writes again what it may have lost. Returns how many it had lost."""
        outcomes = list(self._unconfirmed)
        if not outcomes:
            return 0
        settled = await self._write(outcomes)
        if settled:
            log.warning("outcomes lost in a database restart were written again", extra={
                "action": "settle_rewrite", "count": len(settled)})
            self._on_settled([o for o in outcomes if o.run_id in settled], settled)
        return len(settled)

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
                try:
                    settled = await self._write(batch)
                except DATABASE_ERRORS as exc:
                    if not statement_refused(exc):
                        raise
                    # Refused, not unavailable: one outcome may hold what PostgreSQL cannot store, and retrying
                    # the batch as it is would refuse it forever, holding every other outcome back with it.
                    log.warning("settle refused, writing the outcomes one by one: %r", exc,
                                extra={"action": "settle_split"})
                    settled = await self._write_each(batch)
                break
            except DATABASE_ERRORS as exc:
                # Keep the outcomes: losing them would leave runs executing until recovery.
                self._queue.metrics.loop_errors.labels("settle").inc()
                log.warning("settle failed, retrying: %r", exc, extra={"action": "settle_retry"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except asyncio.CancelledError:
                # stop() cancels this loop, then flushes what is buffered: the batch goes back first, written
                # or not (writing an outcome twice is harmless, see above). Dropped, a 202's detach was lost and
                # the hand-back that follows requeued the run its endpoint had accepted.
                self._items[:0] = batch
                self._has_items.set()
                raise
        self._unconfirmed.extend(batch)
        self._appended += len(batch)
        self._on_settled(batch, settled)

    async def _write_each(self, outcomes: list[Outcome]) -> set[str]:
        settled: set[str] = set()
        for outcome in outcomes:
            try:
                settled |= await self._write([outcome])
            except DATABASE_ERRORS as exc:
                if not statement_refused(exc):
                    raise
                # The run still ends as its endpoint said; what could not be stored is named in its error.
                why = f"outcome not storable: {exc}"
                bare = replace(outcome, output=None, record={"attempt": outcome.attempt},
                               error=(f"{outcome.error}; {why}" if outcome.error else why)[:1024])
                settled |= await self._write([bare])
        return settled

    async def _write(self, outcomes: list[Outcome]) -> set[str]:
        detach = [o for o in outcomes if o.to_status is RunStatus.EXECUTING]
        final = [o for o in outcomes if o.to_status is not RunStatus.EXECUTING]
        settled = await self._queue.settle(self._owner, final) if final else set()
        if detach:
            settled |= await self._queue.detach(self._owner, detach)
        return settled
