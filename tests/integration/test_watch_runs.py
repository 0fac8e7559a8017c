"""RunService.WatchRuns: the project's activity feed in commit order, resumable without loss even when
transactions commit out of id order."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

import asyncpg
import grpc
import pytest

from strait_client.v1 import job_pb2, run_pb2, run_pb2_grpc
from strait_server.config import Settings
from strait_server.store.feed import Cursor, FeedFilter, FeedStore
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink
from tests.support import scrape, ts_in, value

S = run_pb2


class Feed:
    """Collects a WatchRuns stream in the background."""

    def __init__(self, api: Api, **request: object) -> None:
        self.messages: list[run_pb2.WatchRunsResponse] = []
        self.call = api.runs.WatchRuns(run_pb2.WatchRunsRequest(**request), metadata=api.metadata)  # type: ignore[arg-type]
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for message in self.call:
            self.messages.append(message)

    async def ready(self) -> None:
        """Returns once the server has taken the feed position (initial metadata arrived)."""
        await self.call.initial_metadata()

    @property
    def events(self) -> list[run_pb2.RunEvent]:
        return [m.event for m in self.messages if m.WhichOneof("message") == "event"]

    async def until(self, predicate: object, timeout: float = 15) -> None:
        async def check() -> bool:
            return bool(predicate(self.events))  # type: ignore[operator]
        await eventually(check, timeout)

    def close(self) -> None:
        self.call.cancel()


async def _insert_event(conn: asyncpg.Connection, run: run_pb2.Run, message: str) -> None:
    """A log event written the way the server writes one: numbered by the run's event_seq, under its row lock."""
    await conn.execute(
        "WITH r AS (UPDATE runs SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq) "
        "INSERT INTO run_events (run_id, project_id, job_id, seq, type, message) "
        "SELECT $1, $2, $3, r.event_seq, 'log', $4 FROM r",
        run.id, run.project_id, run.job_id, message)


async def test_interleaved_commits_out_of_id_order_lose_nothing_on_resume(
        api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("feed", sink.script("/feed"))
    first, second = await api.trigger(job), await api.trigger(job)
    await api.wait_status(first.id, S.RUN_STATUS_COMPLETED)
    await api.wait_status(second.id, S.RUN_STATUS_COMPLETED)
    watcher = Feed(api, from_start=True)
    await watcher.until(lambda ev: sum(e.to_status == S.RUN_STATUS_COMPLETED for e in ev) == 2)
    token_before = watcher.messages[-1].resume_token

    a = await asyncpg.connect(settings.database_url)
    b = await asyncpg.connect(settings.database_url)
    try:
        tx_a, tx_b = a.transaction(), b.transaction()
        await tx_a.start()
        await _insert_event(a, first, "A")   # takes the lower id
        await tx_b.start()
        await _insert_event(b, second, "B")  # takes the higher id ...
        await tx_b.commit()                       # ... and commits first
        # While A is open, B's event is above the visibility horizon: not served yet, so no reader can
        # move its cursor past A's id before A is visible.
        store = FeedStore(await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1))
        seen = [e.message for _, e in await store.read(first.project_id, Cursor(0, 0),
                                                       FeedFilter(None, None, None), 1000)]
        assert "B" not in seen and "A" not in seen
        await tx_a.commit()
    finally:
        await a.close()
        await b.close()
    await watcher.until(lambda ev: {"A", "B"} <= {e.message for e in ev})
    tail = [e.message for e in watcher.events if e.message in ("A", "B")]
    assert tail == ["A", "B"]  # commit order of the transactions that wrote them (A's xid is older)

    # A client that resumes from before either commit gets both, once each.
    resumed = Feed(api, resume_token=token_before)
    await resumed.until(lambda ev: {"A", "B"} <= {e.message for e in ev})
    assert [e.message for e in resumed.events] == ["A", "B"]
    watcher.close()
    resumed.close()


async def test_feed_filters_and_live_start(api: Api, sink: Sink) -> None:
    a = await api.create_job("feed-a", sink.script("/a"))
    b = await api.create_job("feed-b", sink.script("/b"))
    old = await api.trigger(a)
    await api.wait_status(old.id, S.RUN_STATUS_COMPLETED)
    live = Feed(api)  # from now: the finished run is not replayed
    by_job = Feed(api, job_id=b.id)
    by_slug = Feed(api, job_id="feed-b")  # the job filter takes the slug too
    completions = Feed(api, statuses=[S.RUN_STATUS_COMPLETED], tags={"team": "x"})
    for feed in (live, by_job, by_slug, completions):
        await feed.ready()
    ra = await api.trigger(a)
    rb = await api.trigger(b, tags={"team": "x"})
    for feed in (live, by_job, by_slug, completions):
        await feed.until(lambda ev: any(e.run_id == rb.id and e.to_status == S.RUN_STATUS_COMPLETED for e in ev))
    await live.until(lambda ev: any(e.run_id == ra.id and e.to_status == S.RUN_STATUS_COMPLETED for e in ev))
    assert old.id not in {e.run_id for e in live.events}
    assert {e.run_id for e in by_job.events} == {e.run_id for e in by_slug.events} == {rb.id}
    assert [(e.run_id, e.to_status) for e in completions.events] == [(rb.id, S.RUN_STATUS_COMPLETED)]
    for feed in (live, by_job, by_slug, completions):
        feed.close()


async def test_feed_only_shows_the_callers_project(make_app: AppFactory, settings: Settings, api: Api,
                                                   sink: Sink) -> None:
    other = await connect(await make_app(), settings.admin_key)
    theirs = Feed(other, from_start=True)
    job = await api.create_job("mine", sink.script("/mine"))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    mine = Feed(api, from_start=True)
    await mine.until(lambda ev: any(e.to_status == S.RUN_STATUS_COMPLETED for e in ev))
    assert theirs.events == []
    theirs.close()
    mine.close()
    await other.channel.close()


@pytest.mark.parametrize("token", [
    "nonsense",
    # Well formed, but beyond xid8 and bigint: refused up front, naming the field.
    base64.urlsafe_b64encode(f"f1:{2**64}:1".encode()).decode().rstrip("="),
    base64.urlsafe_b64encode(f"f1:1:{2**63}".encode()).decode().rstrip("="),
])
async def test_bad_resume_token_is_invalid_argument(api: Api, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in api.runs.WatchRuns(run_pb2.WatchRunsRequest(resume_token=token), metadata=api.metadata):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "resume_token" in err.value.details()


async def test_slow_endpoint_runs_still_appear(api: Api, sink: Sink) -> None:
    gate = asyncio.Event()
    job = await api.create_job("slowfeed", sink.script("/slowfeed", Reply(200, block=gate)))
    feed = Feed(api)
    await feed.ready()
    run = await api.trigger(job)
    await feed.until(lambda ev: any(e.run_id == run.id and e.to_status == S.RUN_STATUS_EXECUTING for e in ev))
    gate.set()
    await feed.until(lambda ev: any(e.run_id == run.id and e.to_status == S.RUN_STATUS_COMPLETED for e in ev))
    feed.close()


async def test_a_client_that_stops_reading_is_cut_off_and_can_resume(make_app: AppFactory,
                                                                       settings: Settings) -> None:
    app = await make_app(watch_max_duration=timedelta(seconds=2), watch_stall_grace=timedelta(seconds=1),
                         metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await api.create_job("chatty", "http://127.0.0.1:9/never")
    first = await api.trigger(job, scheduled_time=ts_in(hours=1))
    # Without BDP probing the client's flow-control window stays at 64 KiB, so the server's sends block.
    reader = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=[("grpc.http2.bdp_probe", 0)])
    call = run_pb2_grpc.RunServiceStub(reader).WatchRuns(run_pb2.WatchRunsRequest(from_start=True),
                                                         metadata=api.metadata)
    opening = await call.read()
    assert opening.event.run_id == first.id
    # Far more than the flow-control window while the client reads nothing: the server's send blocks.
    for _ in range(4):
        await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
            job_pb2.RunOptions(payload_json="{}", scheduled_time=ts_in(hours=1),
                               metadata={"pad": "x" * 1000}) for _ in range(250)]), metadata=api.metadata)

    async def cut_off() -> bool:
        return value(await scrape(app), "strait_watch_streams") == 0
    await eventually(cut_off, timeout=20)

    token, seen = opening.resume_token, [(opening.event.run_id, opening.event.sequence)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                break
            if message.HasField("event"):
                seen.append((message.event.run_id, message.event.sequence))
            token = message.resume_token
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # Resuming from the last message read delivers the rest, none twice.
    rest = api.runs.WatchRuns(run_pb2.WatchRunsRequest(resume_token=token), metadata=api.metadata)
    while len(seen) < 1001:
        message = await asyncio.wait_for(rest.read(), 10)
        if message.HasField("event"):
            seen.append((message.event.run_id, message.event.sequence))
    assert len(seen) == len(set(seen)) == 1001
    rest.cancel()
    await reader.close()
    await api.channel.close()
