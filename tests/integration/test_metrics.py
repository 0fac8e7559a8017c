"""Prometheus metrics, scraped over HTTP from /metrics as Prometheus would."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import grpc
import pytest

from strait_client import TaskContext, Worker
from strait_client.v1 import run_pb2
from strait_server.app import App, Role
from strait_server.config import ConfigError, Settings
from tests.conftest import AppFactory, connect, eventually
from tests.integration.test_workers import serving, worker_job
from tests.sink import Reply, Sink
from tests.support import FakeClock, Samples, scheduler_passes, scrape, ts_in, value

S = run_pb2
def transitions(samples: Samples, src: str, dst: str) -> float:
    return value(samples, "strait_run_transitions_total", **{"from": src, "to": dst})


async def test_off_unless_an_address_is_set(app: App) -> None:
    assert app.metrics_port == 0


def test_a_malformed_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="STRAIT_METRICS_ADDRESS"):
        Settings.from_env({"STRAIT_METRICS_ADDRESS": "localhost"})
    assert Settings.from_env({"STRAIT_METRICS_ADDRESS": "[::1]:9464"}).metrics_address == "[::1]:9464"


async def test_runs_through_dispatch_move_the_counters_and_histograms(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(metrics_address="127.0.0.1:0")
    assert app.metrics_port > 0
    api = await connect(app, settings.admin_key)
    ok = await api.create_job("ok", sink.script("/ok"))
    failing = await api.create_job("failing", sink.script("/fail", then=Reply(500)),
                                   max_attempts=1)
    # At idle a trigger is dispatched at once; with an idempotency key it goes through the queue and a claim.
    runs = [await api.trigger(ok), await api.trigger(ok, idempotency_key="k"), await api.trigger(failing)]
    await api.wait_status(runs[0].id, S.RUN_STATUS_COMPLETED)
    await api.wait_status(runs[1].id, S.RUN_STATUS_COMPLETED)
    await api.wait_status(runs[2].id, S.RUN_STATUS_DEAD_LETTER)

    async def settled() -> Samples | None:
        samples = await scrape(app)
        return samples if transitions(samples, "executing", "completed") >= 2 else None
    samples = await eventually(settled)
    assert transitions(samples, "", "queued") == 3
    assert transitions(samples, "queued", "executing") == 3
    assert transitions(samples, "executing", "dead_letter") == 1
    assert value(samples, "strait_dispatch_duration_seconds_count", job=ok.id, outcome="completed") == 2
    assert value(samples, "strait_dispatch_duration_seconds_count", job=failing.id, outcome="dead_letter") == 1
    assert value(samples, "strait_claim_duration_seconds_count") >= 1
    assert value(samples, "strait_settle_duration_seconds_count") >= 1
    assert value(samples, "strait_settle_duration_seconds_sum") > 0

    canceled = await api.trigger(ok, scheduled_time=ts_in(hours=1))
    await api.runs.CancelRun(run_pb2.CancelRunRequest(id=canceled.id), metadata=api.metadata)
    samples = await scrape(app)
    assert transitions(samples, "", "delayed") == 1
    assert transitions(samples, "delayed", "canceled") == 1


async def test_grpc_calls_are_counted_by_method_and_code(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.get_run("run_missing")
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.runs.GetRun(run_pb2.GetRunRequest(id="run_x"), metadata=(("authorization", "Bearer nope"),))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

    samples = await scrape(app)
    get_run = "/strait.v1.RunService/GetRun"
    assert value(samples, "strait_grpc_requests_total", method=get_run, code="NOT_FOUND") == 1
    assert value(samples, "strait_grpc_requests_total", method=get_run, code="UNAUTHENTICATED") == 1
    assert value(samples, "strait_grpc_requests_total", method="/strait.v1.ProjectService/CreateProject",
                 code="OK") == 1
    assert value(samples, "strait_grpc_request_duration_seconds_count", method=get_run) == 2


async def test_open_watch_streams_are_a_gauge(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await api.create_job("watched", "http://127.0.0.1:9/never")
    run = await api.trigger(job, scheduled_time=ts_in(hours=1))  # stays delayed: the stream stays open
    call = api.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run.id), metadata=api.metadata)
    await call.read()  # the stream is set up once its first event arrives
    assert value(await scrape(app), "strait_watch_streams") == 1

    call.cancel()

    async def closed() -> Samples | None:
        samples = await scrape(app)
        return samples if value(samples, "strait_watch_streams") == 0 else None
    samples = await eventually(closed)
    # A stream counts once it has ended, with the status it ended with.
    assert value(samples, "strait_grpc_requests_total", method="/strait.v1.RunService/WatchRun",
                 code="CANCELLED") == 1


async def test_unfinished_runs_by_queue_and_status_read_at_scrape_time(
        make_app: AppFactory, settings: Settings) -> None:
    # No worker: queued runs stay queued.
    app = await make_app(frozenset({Role.API, Role.SCHEDULER}), metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await api.create_job("waiting", "http://127.0.0.1:9/never", queue="emails")
    await api.trigger(job)
    await api.trigger(job)
    await api.trigger(job, scheduled_time=ts_in(hours=1))
    samples = await scrape(app)
    assert value(samples, "strait_runs", queue="emails", status="queued") == 2
    assert value(samples, "strait_runs", queue="emails", status="delayed") == 1

    resp = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    for r in resp.runs:
        await api.runs.CancelRun(run_pb2.CancelRunRequest(id=r.id), metadata=api.metadata)
    samples = await scrape(app)
    # Drained, not gone: a series seen before reads zero.
    assert value(samples, "strait_runs", queue="emails", status="queued") == 0
    assert ("strait_runs", frozenset({("queue", "emails"), ("status", "delayed")})) in samples


async def test_schedule_lag_is_observed_when_a_tick_fires(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    front = await make_app(frozenset({Role.API, Role.WORKER}))
    api = await connect(front, settings.admin_key)
    job = await api.create_job("every-minute", sink.script("/cron"), cron="* * * * *")
    first_tick = job.next_fire_time.ToDatetime(tzinfo=UTC)
    clock = FakeClock()
    scheduler = await make_app(frozenset({Role.SCHEDULER}), clock=clock, cron_interval=timedelta(milliseconds=50),
                               metrics_address="127.0.0.1:0")
    clock.now = first_tick + timedelta(seconds=1.5)
    await scheduler_passes([scheduler], 2)
    samples = await scrape(scheduler)
    assert value(samples, "strait_schedule_lag_seconds_count") == 1
    assert value(samples, "strait_schedule_lag_seconds_sum") == pytest.approx(1.5)
    assert value(samples, "strait_schedule_lag_seconds_bucket", le="2.5") == 1
    assert value(samples, "strait_schedule_lag_seconds_bucket", le="1.0") == 0
    assert transitions(samples, "", "queued") == 1


async def test_connected_workers_and_their_runs_in_flight_by_queue(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await worker_job(api, "render", queue="media")
    worker = Worker(f"127.0.0.1:{app.port}", api.key, slots=4)
    release = asyncio.Event()

    @worker.handler("render", queue="media")
    async def render(ctx: TaskContext, payload: object) -> None:
        await release.wait()

    async with serving(worker):
        runs = [await api.trigger(job) for _ in range(3)]

        async def busy() -> Samples | None:
            samples = await scrape(app)
            return samples if value(samples, "strait_worker_runs_in_flight", queue="media") == 3 else None
        samples = await eventually(busy)
        assert value(samples, "strait_workers_connected", queue="media") == 1
        release.set()
        for run in runs:
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)

    async def gone() -> Samples | None:
        samples = await scrape(app)
        return samples if value(samples, "strait_workers_connected", queue="media") == 0 else None
    assert value(await eventually(gone), "strait_worker_runs_in_flight", queue="media") == 0
    await api.channel.close()
