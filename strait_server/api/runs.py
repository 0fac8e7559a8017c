"""RunService: read runs and their events, cancel, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc

from strait_client.v1 import run_pb2, run_pb2_grpc
from strait_server import errors
from strait_server.api import convert, replies, resume_tokens, run_stats, validate
from strait_server.api.deps import Deps, triggers_of
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations
from strait_server.service.watch import AgedOut, Keepalive, Replayed, Watches
from strait_server.store.feed import Cursor, FeedFilter
from strait_server.store.run_stats import StatsWindow

WATCH_END_KEY = "strait-watch-end"


def encode_resume_token(cursor: Cursor) -> str:
    return resume_tokens.encode("f1", cursor.xid, cursor.id)


def decode_resume_token(token: str) -> Cursor:
    def parse(parts: list[str]) -> Cursor:
        xid, event_id = parts
        cursor = Cursor(int(xid), int(event_id))
        # Outside xid8 and bigint, PostgreSQL (or asyncpg) would refuse it later, less precisely.
        if not (0 <= cursor.xid < 2**64 and 0 <= cursor.id < 2**63):
            raise ValueError(token)
        return cursor
    return resume_tokens.decode(token, "f1", parse)


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


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._reply_bytes = replies.budget(deps.settings.grpc_max_message_bytes)
        self._triggers = triggers_of(deps)
        self._watches = Watches(deps.runs, deps.feed, deps.events, deps.settings)

    @staticmethod
    def _run_id(v: Violations, value: str, path: str = "id") -> str:
        validate.check_text(v, path, value, max_len=128, required=True)
        v.raise_if_any()
        return value

    async def _job_filter(self, project: str, value: str) -> str | None:
        """A job filter's job id: given as such, or resolved from a slug (NOT_FOUND when no job has it)."""
        if not value:
            return None
        if value.startswith("job_"):  # slugs may not start with it
            return value
        return (await self._d.jobs.get(project, slug=value)).id

    async def GetRun(self, request: run_pb2.GetRunRequest,
                     context: grpc.aio.ServicerContext) -> run_pb2.GetRunResponse:
        run_id = self._run_id(Violations(), request.id)
        return run_pb2.GetRunResponse(run=convert.run(await self._d.runs.get(project_id(), run_id)))

    async def ListRuns(self, request: run_pb2.ListRunsRequest,
                       context: grpc.aio.ServicerContext) -> run_pb2.ListRunsResponse:
        project = project_id()
        v = Violations()
        validate.check_text(v, "job_id", request.job_id, max_len=128)
        tags = dict(request.tags)
        validate.check_map(v, "tags", tags, max_entries=20)
        statuses = _statuses(v, request.statuses)
        after = before = None
        if request.HasField("create_time_after"):
            after = validate.timestamp(v, "create_time_after", request.create_time_after)
        if request.HasField("create_time_before"):
            before = validate.timestamp(v, "create_time_before", request.create_time_before)
        size = page_size(request.page_size)
        v.raise_if_any()
        job_id = await self._job_filter(project, request.job_id)
        fp = fingerprint("runs", project, job_id or "", sorted(statuses), after, before, sorted(tags.items()))
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        listed = await self._d.runs.list_runs(project, job_id=job_id, statuses=statuses or None,
                                              after=after, before=before, cursor=cursor, limit=size + 1,
                                              max_bytes=self._reply_bytes, tags=tags or None)
        page = replies.page(listed.items, convert.run, size=size, max_bytes=self._reply_bytes, cut=listed.cut)
        last = page.last
        token = self._d.page_tokens.encode(last.create_time, last.id, fp) if last else ""
        return run_pb2.ListRunsResponse(runs=page.messages, next_page_token=token)

    async def GetRunStats(self, request: run_pb2.GetRunStatsRequest,
                          context: grpc.aio.ServicerContext) -> run_pb2.GetRunStatsResponse:
        project = project_id()
        v = Violations()
        validate.check_text(v, "job_id", request.job_id, max_len=128)
        window, bucket = run_stats.spans(v, request)
        v.raise_if_any()
        job_id = None
        if request.job_id:  # NOT_FOUND for an id too (ListRuns lists nothing for one)
            by_id = request.job_id.startswith("job_")  # slugs may not start with it
            job_id = (await self._d.jobs.get(project, job_id=request.job_id if by_id else "",
                                             slug="" if by_id else request.job_id)).id
        stats = await self._d.run_stats.read(project, job_id, StatsWindow.ending(validate.utc_now(), window, bucket))
        return run_stats.reply(stats)

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
        result = await self._triggers.replay(project_id(), run_id, request.idempotency_key)
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
        with self._d.streams.open(project):
            await context.send_initial_metadata(())  # tells the client the watch is in place
            try:
                async for item in self._watches.run(project, run_id, request.after_sequence,
                                                    follow_replays=request.follow_replays,
                                                    ends_at=self._watches.deadline()):
                    if isinstance(item, Keepalive):
                        yield run_pb2.WatchRunResponse(keepalive=run_pb2.Keepalive(time=convert.ts(item.time)))
                    elif not isinstance(item, Replayed):
                        yield run_pb2.WatchRunResponse(event=convert.event(item))
            except AgedOut:
                return
        context.set_trailing_metadata(((WATCH_END_KEY, "run-finished"),))

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
        feed_filter = FeedFilter(job_id=await self._job_filter(project, request.job_id), statuses=statuses or None,
                                 tags=dict(request.tags) or None)
        with self._d.streams.open(project):
            await context.send_initial_metadata(())  # tells the client the feed position is taken
            try:
                async for item in self._watches.feed(project, cursor, feed_filter):
                    if isinstance(item, Keepalive):
                        yield run_pb2.WatchRunsResponse(keepalive=run_pb2.Keepalive(time=convert.ts(item.time)),
                                                        resume_token=encode_resume_token(cursor))
                    else:
                        cursor, event = item
                        yield run_pb2.WatchRunsResponse(event=convert.event(event),
                                                        resume_token=encode_resume_token(cursor))
            except AgedOut:
                return
