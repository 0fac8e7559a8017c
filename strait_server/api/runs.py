"""RunService: read runs and their events, cancel, replay."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable

import grpc

from strait_client.v1 import run_pb2, run_pb2_grpc
from strait_server import errors
from strait_server.api import convert, replies, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations
from strait_server.model import TERMINAL, EventType, RunEvent
from strait_server.store.feed import Cursor, FeedFilter

_WATCH_PAGE = 200
WATCH_END_KEY = "strait-watch-end"


def encode_resume_token(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(f"f1:{cursor.xid}:{cursor.id}".encode()).decode().rstrip("=")


def decode_resume_token(token: str) -> Cursor:
    try:
        version, xid, event_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
        cursor = Cursor(int(xid), int(event_id))
        # Outside xid8 and bigint, PostgreSQL (or asyncpg) would refuse it later, less precisely.
        if version != "f1" or not (0 <= cursor.xid < 2**64 and 0 <= cursor.id < 2**63):
            raise ValueError(version)
        return cursor
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument([errors.FieldViolation("resume_token", "is not a token this feed issued")]
                                     ) from None


def _statuses(v: Violations, values: Iterable[int]) -> list[str]:
    """Run status filters as stored names; unknown numbers (and UNSPECIFIED) are field violations."""
    names = []
    for i, value in enumerate(values):
        try:
            if value == 0:
                raise ValueError
            names.append(convert.status_name(value))
        except ValueError:
            v.add(f"statuses[{i}]", "is not a known run status")
    return names


class _AgedOut(Exception):
    """The stream reached STRAIT_WATCH_MAX_DURATION; it ends OK and the client resumes."""


async def _woken_within(woken: asyncio.Event, seconds: float) -> bool:
    """Whether `woken` was set within `seconds`."""
    try:
        await asyncio.wait_for(woken.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _ends_run(event: RunEvent) -> bool:
    return event.type == EventType.STATUS_CHANGE and event.to_status in _TERMINAL_NAMES


_TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._reply_bytes = replies.budget(deps.settings.grpc_max_message_bytes)

    @staticmethod
    def _run_id(v: Violations, value: str, path: str = "id") -> str:
        validate.check_text(v, path, value, max_len=128, required=True)
        v.raise_if_any()
        return value

    async def GetRun(self, request: run_pb2.GetRunRequest,
                     context: grpc.aio.ServicerContext) -> run_pb2.GetRunResponse:
        run_id = self._run_id(Violations(), request.id)
        return run_pb2.GetRunResponse(run=convert.run(await self._d.runs.get(project_id(), run_id)))

    async def ListRuns(self, request: run_pb2.ListRunsRequest,
                       context: grpc.aio.ServicerContext) -> run_pb2.ListRunsResponse:
        project = project_id()
        v = Violations()
        validate.check_text(v, "job_id", request.job_id, max_len=128)
        statuses = _statuses(v, request.statuses)
        after = before = None
        if request.HasField("create_time_after"):
            after = validate.timestamp(v, "create_time_after", request.create_time_after)
        if request.HasField("create_time_before"):
            before = validate.timestamp(v, "create_time_before", request.create_time_before)
        size = page_size(request.page_size)
        v.raise_if_any()
        fp = fingerprint("runs", project, request.job_id, sorted(statuses), after, before)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        listed = await self._d.runs.list_runs(project, job_id=request.job_id or None, statuses=statuses or None,
                                              after=after, before=before, cursor=cursor, limit=size + 1,
                                              max_bytes=self._reply_bytes)
        page = replies.page(listed.items, convert.run, size=size, max_bytes=self._reply_bytes, cut=listed.cut)
        last = page.last
        token = self._d.page_tokens.encode(last.create_time, last.id, fp) if last else ""
        return run_pb2.ListRunsResponse(runs=page.messages, next_page_token=token)

    async def CancelRun(self, request: run_pb2.CancelRunRequest,
                        context: grpc.aio.ServicerContext) -> run_pb2.CancelRunResponse:
        v = Violations()
        validate.check_text(v, "reason", request.reason, max_len=1024)
        run_id = self._run_id(v, request.id)
        run = await self._d.runs.cancel(project_id(), run_id, request.reason or "canceled by user")
        self._d.events.published([run.id])
        return run_pb2.CancelRunResponse(run=convert.run(run))

    async def ReplayRun(self, request: run_pb2.ReplayRunRequest,
                        context: grpc.aio.ServicerContext) -> run_pb2.ReplayRunResponse:
        v = Violations()
        validate.check_text(v, "idempotency_key", request.idempotency_key, max_len=256)
        run_id = self._run_id(v, request.id)
        project = project_id()
        original = await self._d.runs.get(project, run_id)
        job = await self._d.jobs.find(project, job_id=original.job_id)
        if job is None:
            raise errors.FailedPrecondition(f"the job of run {run_id!r} was deleted", reason="JOB_DELETED",
                                            subject=original.job_id, violation_type="JOB_STATE")
        await self._d.budgets.require(project)
        result = await self._d.runs.replay(project, job, run_id, request.idempotency_key)
        if not result.repeat:
            self._d.announce([result.run])
        return run_pb2.ReplayRunResponse(run=convert.run(result.run), idempotent_repeat=result.repeat)

    async def ListRunEvents(self, request: run_pb2.ListRunEventsRequest,
                            context: grpc.aio.ServicerContext) -> run_pb2.ListRunEventsResponse:
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        run_id = self._run_id(v, request.run_id, "run_id")
        size = page_size(request.page_size)
        after = request.after_sequence
        if request.page_token:
            try:
                after = max(after, int(request.page_token))
            except ValueError:
                raise errors.InvalidArgument([errors.FieldViolation("page_token", "is not a valid token")]) from None
        # Events can carry tens of KiB each (logs, output chunks): pages are bounded by bytes too.
        listed = await self._d.runs.event_page(project_id(), run_id, after, size + 1, self._reply_bytes)
        page = replies.page(listed.items, convert.event, size=size, max_bytes=self._reply_bytes, cut=listed.cut)
        token = str(page.last.seq) if page.last else ""
        return run_pb2.ListRunEventsResponse(events=page.messages, next_page_token=token)

    async def WatchRun(self, request: run_pb2.WatchRunRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[run_pb2.WatchRunResponse]:
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        run_id = self._run_id(v, request.run_id, "run_id")
        project = project_id()
        await self._d.runs.get(project, run_id)  # NOT_FOUND before the stream starts
        # Trailing metadata tells a client whether to resume: the run finished, or the stream only aged out.
        context.set_trailing_metadata(((WATCH_END_KEY, "max-duration"),))
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self._d.settings.watch_max_duration.total_seconds()
        after = request.after_sequence
        with self._d.streams.open(project):
            await context.send_initial_metadata(())  # tells the client the watch is in place
            try:
                while True:
                    with self._d.events.watch(run_id) as woken:
                        async for message in self._watch(project, run_id, after, woken, ends_at):
                            yield message
                    if not request.follow_replays:
                        break
                    replay = None
                    async for item in self._next_replay(project, run_id, ends_at):
                        if isinstance(item, str):
                            replay = item
                        else:
                            yield item
                    assert replay is not None
                    run_id, after = replay, 0
            except _AgedOut:
                return
        context.set_trailing_metadata(((WATCH_END_KEY, "run-finished"),))

    async def _next_replay(self, project: str, run_id: str,
                           ends_at: float) -> AsyncIterator[str | run_pb2.WatchRunResponse]:
        """Polls for the finished run's replay (its id is the last item), with keepalives meanwhile."""
        s = self._d.settings
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while loop.time() < ends_at:
            replay = await self._d.runs.replay_of(project, run_id)
            if replay is not None:
                yield replay
                return
            if loop.time() - last_sent >= s.watch_keepalive_interval.total_seconds():
                yield run_pb2.WatchRunResponse(keepalive=run_pb2.Keepalive(time=convert.ts(convert.utc_now())))
                last_sent = loop.time()
            await asyncio.sleep(s.watch_poll_interval.total_seconds())
        raise _AgedOut

    async def _watch(self, project: str, run_id: str, after: int, woken: asyncio.Event,
                     ends_at: float) -> AsyncIterator[run_pb2.WatchRunResponse]:
        """Reads stored events after the cursor, then waits for a wake-up (or polls when the event bus is
        down), and ends after the run's terminal event or at the maximum stream duration."""
        s = self._d.settings
        loop = asyncio.get_running_loop()
        keepalive = s.watch_keepalive_interval.total_seconds()
        last_sent = loop.time()
        while True:
            woken.clear()
            events, over = await self._page(project, run_id, after)
            for event in events:
                yield run_pb2.WatchRunResponse(event=convert.event(event))
                after = event.seq
            if events:
                last_sent = loop.time()
            if over:
                return
            if len(events) == _WATCH_PAGE:
                continue
            now = loop.time()
            if now >= ends_at:
                raise _AgedOut
            wait = min(ends_at - now, max(keepalive - (now - last_sent), 0.0))
            if not self._d.events.healthy:
                wait = min(wait, s.watch_poll_interval.total_seconds())
            if not await _woken_within(woken, wait) and loop.time() - last_sent >= keepalive:
                yield run_pb2.WatchRunResponse(keepalive=run_pb2.Keepalive(time=convert.ts(convert.utc_now())))
                last_sent = loop.time()

    async def _page(self, project: str, run_id: str, after: int) -> tuple[list[RunEvent], bool]:
        """The run's next stored events after the cursor, and whether the stream is over with them: the run's
        terminal event is the last of them, or was sent already."""
        events = await self._d.runs.events_after(project, run_id, after, _WATCH_PAGE)
        if events:
            return events, _ends_run(events[-1])
        status, latest = await self._d.runs.progress(project, run_id)
        return events, status.is_terminal and latest <= after

    async def WatchRuns(self, request: run_pb2.WatchRunsRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[run_pb2.WatchRunsResponse]:
        project = project_id()
        v = Violations()
        validate.check_text(v, "job_id", request.job_id, max_len=128)
        validate.check_map(v, "tags", dict(request.tags), max_entries=20)
        statuses = _statuses(v, request.statuses)
        v.raise_if_any()
        if request.resume_token:
            cursor = decode_resume_token(request.resume_token)
        else:
            cursor = Cursor(0, 0) if request.from_start else await self._d.feed.now()
        feed_filter = FeedFilter(job_id=request.job_id or None, statuses=statuses or None,
                                 tags=dict(request.tags) or None)
        with self._d.streams.open(project), self._d.events.watch_all() as woken:
            await context.send_initial_metadata(())  # tells the client the feed position is taken
            async for message in self._feed(project, cursor, feed_filter, woken):
                yield message

    async def _feed(self, project: str, cursor: Cursor, feed_filter: FeedFilter,
                    woken: asyncio.Event) -> AsyncIterator[run_pb2.WatchRunsResponse]:
        s = self._d.settings
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + s.watch_max_duration.total_seconds()
        keepalive = s.watch_keepalive_interval.total_seconds()
        last_sent = loop.time()
        while loop.time() < ends_at:
            woken.clear()
            rows = await self._d.feed.read(project, cursor, feed_filter, _WATCH_PAGE)
            for position, event in rows:
                cursor = position
                yield run_pb2.WatchRunsResponse(event=convert.event(event), resume_token=encode_resume_token(cursor))
            if rows:
                last_sent = loop.time()
                if len(rows) == _WATCH_PAGE:
                    continue
            # A transaction that holds the horizon back may end without writing events (so without a
            # wake-up): look again within a second regardless.
            wait = min(1.0, max(keepalive - (loop.time() - last_sent), 0.0), max(ends_at - loop.time(), 0.0))
            if not self._d.events.healthy:
                wait = min(wait, s.watch_poll_interval.total_seconds())
            if not await _woken_within(woken, wait) and loop.time() - last_sent >= keepalive:
                yield run_pb2.WatchRunsResponse(keepalive=run_pb2.Keepalive(time=convert.ts(convert.utc_now())),
                                                resume_token=encode_resume_token(cursor))
                last_sent = loop.time()
