"""RunContextService: job code reports logs, progress, heartbeats, checkpoints and its own completion,
authorised by the run token of its dispatch."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import grpc
import jwt
import pytest

from strait_client import (
    AsyncRunContext,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    RunContext,
    UnauthenticatedError,
)
from strait_client.v1 import run_context_pb2, run_context_pb2_grpc, run_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Received, Reply, Sink

S = run_pb2
FAST = {"initial_delay": {"nanos": 10_000_000}}


def context_for(app: App, request: Received) -> AsyncRunContext:
    return AsyncRunContext.from_headers(request.headers, f"127.0.0.1:{app.port}")


async def test_logs_and_progress_reach_a_watcher_in_order(app: App, api: Api, sink: Sink) -> None:
    async def job_code(request: Received) -> None:
        async with context_for(app, request) as ctx:
            await ctx.log("starting", data={"n": 1})
            await ctx.progress(50, "half way", step="fetch")
            await ctx.progress(100, "done")

    job = await api.create_job("reporting", sink.script("/reporting", Reply(200, action=job_code)))
    run = await api.trigger(job)
    call = api.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run.id), metadata=api.metadata)
    events = [m.event async for m in call if m.WhichOneof("message") == "event"]
    assert [(e.type, e.message) for e in events if e.type != "status_change"] == [
        ("log", "starting"), ("progress", "half way"), ("progress", "done")]
    assert json.loads(events[2].data_json) == {"level": "info", "data": {"n": 1}}
    assert json.loads(events[3].data_json) == {"percent": 50.0, "step": "fetch"}
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].to_status == S.RUN_STATUS_COMPLETED


async def test_202_then_asynchronous_completion(app: App, api: Api, sink: Sink) -> None:
    job = await api.create_job("async-job", sink.script("/async", Reply(202, "")))
    run = await api.trigger(job)
    [request] = await sink.wait_for(1, "/async")

    async def accepted() -> bool:
        return any(e.type == "accepted" for e in await api.events(run.id))
    await eventually(accepted)
    assert (await api.get_run(run.id)).status == S.RUN_STATUS_EXECUTING
    async with context_for(app, request) as ctx:
        await ctx.log("working in the background")
        await ctx.complete({"answer": 42})
        with pytest.raises(FailedPreconditionError):  # the run settled: its attempt can report no more
            await ctx.log("too late")
    done = await api.get_run(run.id)
    assert done.status == S.RUN_STATUS_COMPLETED and json.loads(done.output_json) == {"answer": 42}
    assert [a.status_code for a in done.attempts] == [202]


async def test_heartbeats_keep_a_long_asynchronous_run_alive(make_app: AppFactory, settings: Settings,
                                                            sink: Sink) -> None:
    # Tokens live for the timeout plus 1 s here: heartbeats must renew them too.
    app = await make_app(run_token_ttl_margin=timedelta(seconds=1))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("long-async", sink.script("/long-async", Reply(202, "")), max_attempts=1,
                               timeout={"seconds": 1})
    run = await api.trigger(job)
    [request] = await sink.wait_for(1, "/long-async")
    async with context_for(app, request) as ctx:
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 3.5:  # 3.5 s of work: 1 s timeout, 2 s token
            assert await ctx.heartbeat() is False
            await asyncio.sleep(0.3)  # the job's own pace of work, not synchronisation
        await ctx.log("still here")  # with the renewed token
        await ctx.complete()
    assert (await api.get_run(run.id)).status == S.RUN_STATUS_COMPLETED
    await api.channel.close()


async def test_asynchronous_run_without_heartbeats_times_out(api: Api, sink: Sink) -> None:
    job = await api.create_job("silent-async", sink.script("/silent-async", Reply(202, "")), max_attempts=1,
                               timeout={"seconds": 1})
    run = await api.trigger(job)
    timed_out = await api.wait_status(run.id, S.RUN_STATUS_TIMED_OUT)
    assert timed_out.error == "no completion reported within the timeout"


async def test_cancel_is_observed_through_heartbeat(app: App, api: Api, sink: Sink) -> None:
    job = await api.create_job("cancel-me", sink.script("/cancel-me", Reply(202, "")))
    run = await api.trigger(job)
    [request] = await sink.wait_for(1, "/cancel-me")
    async with context_for(app, request) as ctx:
        assert await ctx.heartbeat() is False
        await api.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id), metadata=api.metadata)
        assert await ctx.heartbeat() is True
        with pytest.raises(FailedPreconditionError):
            await ctx.complete()
    assert (await api.get_run(run.id)).status == S.RUN_STATUS_CANCELED


async def test_fail_ends_the_run_without_retries(app: App, api: Api, sink: Sink) -> None:
    async def job_code(request: Received) -> None:
        async with context_for(app, request) as ctx:
            await ctx.fail("bad input: no customer")

    job = await api.create_job("failing", sink.script("/failing", Reply(500, action=job_code)), max_attempts=3)
    run = await api.trigger(job)
    failed = await api.wait_status(run.id, S.RUN_STATUS_FAILED)
    assert failed.error == "bad input: no customer" and failed.attempt == 1
    assert len(sink.for_path("/failing")) == 1  # the 500 that followed was ignored...

    async def recorded() -> bool:  # ... except in the attempt history
        return [a.status_code for a in (await api.get_run(run.id)).attempts] == [500]
    await eventually(recorded)


async def test_checkpoint_is_handed_to_the_next_attempt(app: App, api: Api, sink: Sink) -> None:
    async def first_attempt(request: Received) -> None:
        async with context_for(app, request) as ctx:
            assert ctx.last_checkpoint is None
            await ctx.checkpoint({"cursor": 17})

    async def first_attempt_checked(request: Received) -> None:
        async with context_for(app, request) as ctx:
            with pytest.raises(InvalidArgumentError):  # it must fit in a header
                await ctx.checkpoint({"blob": "x" * 5000})
        await first_attempt(request)

    url = sink.script("/resumable", Reply(503, action=first_attempt_checked), then=Reply(200))
    job = await api.create_job("resumable", url, retry_policy=FAST)
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    second = sink.for_path("/resumable")[1]
    assert json.loads(second.headers["X-Last-Checkpoint"]) == {"cursor": 17}


async def test_stream_output_chunks_become_events(app: App, api: Api, sink: Sink) -> None:
    async def job_code(request: Received) -> None:
        async with context_for(app, request) as ctx:
            assert await ctx.stream_output([b"hello ", b"world"], stream_id="stdout") == 3

    job = await api.create_job("streaming", sink.script("/streaming", Reply(200, action=job_code)))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    chunks = [json.loads(e.data_json) for e in await api.events(run.id) if e.type == "output_chunk"]
    assert [c["stream_id"] for c in chunks] == ["stdout"] * 3 and chunks[-1]["done"] is True


async def test_the_blocking_context_reports_streams_and_completes(app: App, api: Api, sink: Sink) -> None:
    def job_code_blocking(request: Received) -> None:
        with RunContext.from_headers(request.headers, f"127.0.0.1:{app.port}", timeout=timedelta(seconds=5)) as ctx:
            assert ctx.run_id == request.run_id and ctx.last_checkpoint is None
            ctx.log("blocking", data={"n": 1})
            ctx.progress(50, "half way")
            assert ctx.heartbeat() is False
            assert ctx.stream_output(iter([b"one ", b"two"]), stream_id="stdout") == 3
            ctx.complete({"done": True})
            with pytest.raises(FailedPreconditionError):  # the attempt is over
                ctx.log("too late")

    async def job_code(request: Received) -> None:
        await asyncio.to_thread(job_code_blocking, request)  # the server runs on this loop

    job = await api.create_job("blocking-ctx", sink.script("/blocking-ctx", Reply(202, "", action=job_code)))
    run = await api.trigger(job)
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert json.loads(done.output_json) == {"done": True}
    events = await api.events(run.id)
    chunks = [json.loads(e.data_json) for e in events if e.type == "output_chunk"]
    assert [c["stream_id"] for c in chunks] == ["stdout"] * 3 and chunks[-1]["done"] is True
    assert [e.message for e in events if e.type in ("log", "progress")] == ["blocking", "half way"]


async def test_token_misuse_is_refused(app: App, api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("guarded", sink.script("/guarded", Reply(202, "")))
    first = await api.trigger(job)
    second = await api.trigger(job)
    [request, _] = await sink.wait_for(2, "/guarded")
    token = request.headers["X-Run-Token"]
    other_run = second.id if request.run_id == first.id else first.id
    stub = run_context_pb2_grpc.RunContextServiceStub(api.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a token for another run
        await stub.Log(run_context_pb2.LogRequest(run_id=other_run, message="x"),
                       metadata=(("authorization", f"Bearer {token}"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = jwt.encode({"iss": "strait:run-token", "sub": request.run_id, "attempt": 1, "exp": 2**31},
                        "not-the-key" * 4, algorithm="HS256")
    expired = jwt.encode({"iss": "strait:run-token", "sub": request.run_id, "attempt": 1, "iat": 1, "exp": 2},
                         settings.jwt_signing_key, algorithm="HS256")
    for bad in (forged, expired, api.key):  # forged, expired, and an API key instead of a run token
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Log(run_context_pb2.LogRequest(message="x"), metadata=(("authorization", f"Bearer {bad}"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # And a run token is no API key.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.runs.GetRun(run_pb2.GetRunRequest(id=request.run_id),
                              metadata=(("authorization", f"Bearer {token}"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with context_for(app, request) as ctx:
        with pytest.raises(PermissionDeniedError):
            await ctx._call("Log", run_context_pb2.LogRequest(run_id=other_run, message="x"))
        with pytest.raises(UnauthenticatedError):
            await AsyncRunContext(ctx.info.__class__(request.run_id, "", 1, forged, None),
                                  f"127.0.0.1:{app.port}").log("x")
    # Nothing was written by the refused calls.
    assert all(e.type != "log" for e in await api.events(request.run_id))


async def test_stale_attempt_token_is_refused(app: App, api: Api, sink: Sink) -> None:
    url = sink.script("/flaky-ctx", Reply(503), then=Reply(202, ""))
    job = await api.create_job("flaky-ctx", url, retry_policy=FAST)
    run = await api.trigger(job)
    first, _second = await sink.wait_for(2, "/flaky-ctx")
    async with context_for(app, first) as ctx:  # attempt 1's token, while attempt 2 runs
        with pytest.raises(FailedPreconditionError) as err:
            await ctx.log("from the past")
        assert err.value.reason == "ATTEMPT_SUPERSEDED"
    assert (await api.get_run(run.id)).attempt == 2


async def test_asynchronous_run_survives_its_dispatcher_restarting(api: Api, sink: Sink, app: App) -> None:
    job = await api.create_job("detached", sink.script("/detached", Reply(202, "")),
                               timeout=timedelta(seconds=30))
    run = await api.trigger(job)
    [request] = await sink.wait_for(1, "/detached")
    assert app.dispatcher is not None
    await app.dispatcher.stop(drain_timeout_s=1)  # hand-back and heartbeat row gone: the lease is detached
    async with context_for(app, request) as ctx:
        assert await ctx.heartbeat() is False
        await ctx.complete({"late": True})
    assert (await api.get_run(run.id)).status == S.RUN_STATUS_COMPLETED


async def test_nul_in_reported_json_is_refused_naming_the_field(app: App, api: Api, sink: Sink) -> None:
    refused: list[tuple[grpc.StatusCode, str]] = []

    async def job_code(request: Received) -> None:
        stub = run_context_pb2_grpc.RunContextServiceStub(api.channel)
        md = (("authorization", f"Bearer {request.headers['X-Run-Token']}"),)
        for call in (stub.Log(run_context_pb2.LogRequest(message="x", data_json='{"a": "\\u0000"}'), metadata=md),
                     stub.Checkpoint(run_context_pb2.CheckpointRequest(state_json='"a\\u0000"'), metadata=md)):
            try:
                await call
            except grpc.aio.AioRpcError as err:
                refused.append((err.code(), err.details() or ""))
    job = await api.create_job("nul", sink.script("/nul", Reply(action=job_code)))
    run = await api.trigger(job)
    await api.wait_status(run.id, run_pb2.RUN_STATUS_COMPLETED)
    assert [code for code, _ in refused] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert "data_json" in refused[0][1] and "state_json" in refused[1][1]
    assert not any(e.type in ("log", "checkpoint") for e in await api.events(run.id))
