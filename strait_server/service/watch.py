"""Following stored events as they are committed: the loops behind WatchRun, WatchRuns, WatchWorkflowRun and
WatchWorkflowRuns.

One tailing rule serves both (and any later watch stream): read what is stored after the cursor, then wait for
a wake-up from the event bus (or poll while the bus is unhealthy), send a keepalive when idle for the keepalive
interval, and stop at the stream's maximum duration. Gap-free and duplicate-free because the cursor only moves
over stored events; the bus only says when to look again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from strait_server.config import Settings
from strait_server.events import EventBus
from strait_server.model import TERMINAL, EventType, RunEvent
from strait_server.store.feed import Cursor, FeedFilter, FeedStore
from strait_server.store.runs import RunStore
from strait_server.store.workflow_runs import (
    MapCountsRow,
    StatusChangeRow,
    StatusFeedCursor,
    StepRunRow,
    WorkflowRunEventRow,
    WorkflowRunRow,
    WorkflowRunStore,
)

T = TypeVar("T")

# Stored events read per query.
PAGE = 200
# How often a watch looks at the counts of a running map step (so at most one MapProgress a second for each).
MAP_PROGRESS_INTERVAL = 1.0
_TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)
_FINAL_WORKFLOW_STATUSES = frozenset({"completed", "failed", "canceled", "timed_out"})


@dataclass(frozen=True)
class Keepalive:
    """Nothing new for the keepalive interval: the stream says it is alive."""

    time: datetime


class AgedOut(Exception):
    """The stream reached STRAIT_WATCH_MAX_DURATION."""


@dataclass(frozen=True)
class Replayed:
    """WatchRun with follow_replays: the watched run finished and this run replays it; events follow."""

    run_id: str


@dataclass(frozen=True)
class WorkflowRunSnapshot:
    """A workflow run and its steps as of its event sequence `run.event_seq`."""

    run: WorkflowRunRow
    steps: list[StepRunRow]


@dataclass(frozen=True)
class MapProgress:
    """A running map step's counts changed."""

    counts: MapCountsRow
    time: datetime


WorkflowRunItem = WorkflowRunSnapshot | WorkflowRunEventRow | MapProgress | Keepalive


class _MapCounts:
    """Follows the counts of a workflow run's running map steps for a watch: its instances end without events
    of their own, so the counts are read (at most once a second while a map runs) and sent when they changed."""

    def __init__(self, store: WorkflowRunStore, run_id: str, maps: bool = True) -> None:
        self._store = store
        self._run_id = run_id
        self._maps = maps  # False: the run has no map step, so there is never anything to read
        # None: not known (at first, and after a step changed status).
        self._running: bool | None = None if maps else False
        self._looked = 0.0
        self._sent: dict[str, MapCountsRow] = {}

    def next_look(self) -> float | None:
        """How long a watch may wait before looking again (None: no map runs; events say when one starts)."""
        if self._running is None:
            return 0.0
        if not self._running:
            return None
        return max(0.0, self._looked + MAP_PROGRESS_INTERVAL - asyncio.get_running_loop().time())

    async def changes(self, events: list[WorkflowRunEventRow]) -> list[MapProgress]:
        if not self._maps:
            return []
        if any(e.type == "step_status" for e in events):
            self._running = None
        now = asyncio.get_running_loop().time()
        if self._running is False or (self._running and now - self._looked < MAP_PROGRESS_INTERVAL):
            return []
        self._looked = now
        rows = await self._store.running_maps(self._run_id)
        self._running = bool(rows)
        changed = [r for r in rows if self._sent.get(r.step_ref) != r]
        self._sent.update((r.step_ref, r) for r in changed)
        at = datetime.now(UTC)
        return [MapProgress(r, at) for r in changed]


def ends_run(event: RunEvent) -> bool:
    return event.type == EventType.STATUS_CHANGE and event.to_status in _TERMINAL_NAMES


async def _woken_within(woken: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(woken.wait(), seconds)
    except TimeoutError:
        return False
    return True


class Watches:
    def __init__(self, runs: RunStore, feed: FeedStore, events: EventBus, settings: Settings) -> None:
        self._runs = runs
        self._feed = feed
        self._events = events
        self._keepalive = settings.watch_keepalive_interval.total_seconds()
        self._poll = settings.watch_poll_interval.total_seconds()
        self._max_duration = settings.watch_max_duration.total_seconds()

    def deadline(self) -> float:
        """When a stream opened now ends at the latest (event-loop time)."""
        return asyncio.get_running_loop().time() + self._max_duration

    async def run(self, project: str, run_id: str, after: int, *, follow_replays: bool,
                  ends_at: float) -> AsyncIterator[RunEvent | Keepalive | Replayed]:
        """A run's events after `after` until its terminal event, then (follow_replays) its replay's, and so
        on. Raises AgedOut at `ends_at`."""
        while True:
            with self._events.watch(run_id) as woken:
                async for item in self._tail(self._run_pages(project, run_id, after), woken, ends_at):
                    yield item
            if not follow_replays:
                return
            async for step in self._next_replay(project, run_id, ends_at):
                yield step
                if isinstance(step, Replayed):
                    run_id, after = step.run_id, 0

    def _run_pages(self, project: str, run_id: str, after: int) -> Callable[[], Awaitable[tuple[list[RunEvent], bool]]]:
        async def read() -> tuple[list[RunEvent], bool]:
            """The next stored events, and whether the stream is over with them: the run's terminal event is
            the last of them, or was sent already."""
            nonlocal after
            events = await self._runs.events_after(project, run_id, after, PAGE)
            if events:
                after = events[-1].seq
                return events, ends_run(events[-1])
            status, latest = await self._runs.progress(project, run_id)
            return events, status.is_terminal and latest <= after
        return read

    async def _next_replay(self, project: str, run_id: str, ends_at: float) -> AsyncIterator[Keepalive | Replayed]:
        """Polls for the finished run's replay (the last item), with keepalives meanwhile."""
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while loop.time() < ends_at:
            replay = await self._runs.replay_of(project, run_id)
            if replay is not None:
                yield Replayed(replay)
                return
            if loop.time() - last_sent >= self._keepalive:
                yield Keepalive(datetime.now(UTC))
                last_sent = loop.time()
            await asyncio.sleep(self._poll)
        raise AgedOut

    async def feed(self, project: str, cursor: Cursor,
                   feed_filter: FeedFilter) -> AsyncIterator[tuple[Cursor, RunEvent] | Keepalive]:
        """The project's events after `cursor`, in commit order, matching the filter. Raises AgedOut at the
        maximum duration."""
        async def read() -> tuple[list[tuple[Cursor, RunEvent]], bool]:
            nonlocal cursor
            rows = await self._feed.read(project, cursor, feed_filter, PAGE)
            if rows:
                cursor = rows[-1][0]
            return rows, False
        with self._events.watch_all() as woken:
            # A transaction that holds the feed's horizon back may end without writing events (so without a
            # wake-up): look again within a second regardless.
            async for item in self._tail(read, woken, self.deadline(), max_wait=1.0):
                yield item

    async def workflow_runs(self, store: WorkflowRunStore, project: str, cursor: StatusFeedCursor,
                            workflow_id: str | None) -> AsyncIterator[StatusChangeRow | Keepalive]:
        """The project's workflow-run status changes after `cursor`, in commit order. Raises AgedOut at the
        maximum duration."""
        async def read() -> tuple[list[StatusChangeRow], bool]:
            nonlocal cursor
            rows = await store.status_changes(project, cursor, workflow_id, PAGE)
            if rows:
                cursor = rows[-1].cursor
            return rows, False
        with self._events.watch_all() as woken:
            # As in feed(): a transaction holding the horizon back may end without a wake-up.
            async for item in self._tail(read, woken, self.deadline(), max_wait=1.0):
                yield item

    async def workflow_run(self, store: WorkflowRunStore, project: str, run_id: str, after: int, *,
                           snapshot: bool = False, maps: bool = True) -> AsyncIterator[WorkflowRunItem]:
        """A workflow run's events after `after` (or its snapshot and the events after it) until its final one,
        with the counts of its running map steps as they change (`maps`: whether it has map steps at all).
        Raises AgedOut at the maximum duration."""
        if snapshot:
            run, steps = await store.snapshot(project, run_id)
            after = run.event_seq
            yield WorkflowRunSnapshot(run, steps)
        counts = _MapCounts(store, run_id, maps)

        async def read() -> tuple[list[WorkflowRunEventRow | MapProgress], bool]:
            nonlocal after
            events = await store.events_after(project, run_id, after, PAGE)
            progress = await counts.changes(events)
            if events:
                after = events[-1].seq
                last = events[-1]
                if not (last.type == "run_status" and last.to_status in _FINAL_WORKFLOW_STATUSES):
                    return [*events, *progress], False
            # An ended run may have opened again since (a retried or replayed step): over only if still ended.
            status, latest = await store.progress(project, run_id)
            over = status in _FINAL_WORKFLOW_STATUSES and latest <= after
            return [*events, *([] if over else progress)], over
        with self._events.watch(run_id) as woken:
            async for item in self._tail(read, woken, self.deadline(), max_wait=counts.next_look):
                yield item

    async def _tail(self, read: Callable[[], Awaitable[tuple[list[T], bool]]], woken: asyncio.Event,
                    ends_at: float, max_wait: float | Callable[[], float | None] | None = None
                    ) -> AsyncIterator[T | Keepalive]:
        """`max_wait`: look again at least this often (seconds, or a function saying it before each wait)."""
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while True:
            woken.clear()
            items, over = await read()
            for item in items:
                yield item
            if items:
                last_sent = loop.time()
            if over:
                return
            if len(items) >= PAGE:
                continue
            now = loop.time()
            if now >= ends_at:
                raise AgedOut
            look = max_wait() if callable(max_wait) else max_wait
            wait = min(ends_at - now, max(self._keepalive - (now - last_sent), 0.0), look or float("inf"))
            if not self._events.healthy:
                wait = min(wait, self._poll)
            if not await _woken_within(woken, wait) and loop.time() - last_sent >= self._keepalive:
                yield Keepalive(datetime.now(UTC))
                last_sent = loop.time()
