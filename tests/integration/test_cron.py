"""Cron schedules: one run per tick across several scheduler processes, misfires, overlap policies."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import App, Role
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.processes import serve_subprocess
from tests.sink import Reply, Sink
from tests.support import FakeClock, scheduler_passes

S = run_pb2


async def _schedulers(make_app: AppFactory, clock: FakeClock, count: int) -> list[App]:
    apps = []
    for _ in range(count):
        # The injectable clock: no waiting for real minutes.
        apps.append(await make_app(frozenset({Role.SCHEDULER}), clock=clock, cron_interval=timedelta(milliseconds=50)))
    return apps


async def _runs_of(api: Api, job: job_pb2.Job) -> list[run_pb2.Run]:
    resp = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id, page_size=1000), metadata=api.metadata)
    return list(reversed(resp.runs))


async def test_each_tick_fires_exactly_once_across_three_schedulers(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    front = await make_app(frozenset({Role.API, Role.WORKER}))
    api = await connect(front, settings.admin_key)
    job = await api.create_job("every-minute", sink.script("/cron"), cron="* * * * *")
    first_tick = job.next_fire_time.ToDatetime(tzinfo=UTC)
    assert first_tick.second == 0 and first_tick > datetime.now(UTC) - timedelta(seconds=1)
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 3)

    clock.now = first_tick + timedelta(seconds=1)
    await scheduler_passes(schedulers, 3)
    runs = await _runs_of(api, job)
    assert len(runs) == 1 and runs[0].metadata["scheduled_tick"] == first_tick.isoformat()
    assert runs[0].metadata["triggered_by"] == "cron"

    clock.now = first_tick + timedelta(minutes=1, seconds=1)
    await scheduler_passes(schedulers, 3)
    assert len(await _runs_of(api, job)) == 2

    # Ten minutes of downtime: the latest missed tick fires once, not a burst.
    clock.now = first_tick + timedelta(minutes=11, seconds=30)
    await scheduler_passes(schedulers, 3)
    runs = await _runs_of(api, job)
    assert len(runs) == 3
    assert runs[-1].metadata["scheduled_tick"] == (first_tick + timedelta(minutes=11)).isoformat()
    got = (await api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata)).job
    assert got.next_fire_time.ToDatetime(tzinfo=UTC) == first_tick + timedelta(minutes=12)
    for r in runs:
        await api.wait_status(r.id, S.RUN_STATUS_COMPLETED)
    await api.channel.close()


@pytest.mark.parametrize(("policy", "expected"), [
    (job_pb2.CRON_OVERLAP_POLICY_SKIP, [S.RUN_STATUS_EXECUTING]),
    (job_pb2.CRON_OVERLAP_POLICY_CANCEL_RUNNING, [S.RUN_STATUS_CANCELED, S.RUN_STATUS_EXECUTING]),
    (job_pb2.CRON_OVERLAP_POLICY_ALLOW, [S.RUN_STATUS_EXECUTING, S.RUN_STATUS_EXECUTING]),
])
async def test_overlap_policies(make_app: AppFactory, settings: Settings, sink: Sink, policy: int,
                                expected: list[int]) -> None:
    front = await make_app(frozenset({Role.API, Role.WORKER}))
    api = await connect(front, settings.admin_key)
    gate = asyncio.Event()
    job = await api.create_job("overlapping", sink.script("/overlap", then=Reply(200, block=gate)),
                               cron="*/5 * * * *", cron_overlap_policy=policy)
    tick = job.next_fire_time.ToDatetime(tzinfo=UTC)
    clock = FakeClock()
    [scheduler] = await _schedulers(make_app, clock, 1)
    clock.now = tick
    await scheduler_passes([scheduler], 2)
    [first] = await _runs_of(api, job)
    await api.wait_status(first.id, S.RUN_STATUS_EXECUTING)
    clock.now = tick + timedelta(minutes=5)
    await scheduler_passes([scheduler], 2)

    async def settled() -> list[int] | None:
        statuses = [r.status for r in await _runs_of(api, job)]
        return statuses if statuses == expected else None
    await eventually(settled)
    gate.set()
    await api.channel.close()


async def test_disabled_job_creates_no_runs(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    front = await make_app(frozenset({Role.API}))
    api = await connect(front, settings.admin_key)
    job = await api.create_job("paused", sink.script("/paused"), cron="* * * * *", enabled=False)
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 1)
    clock.now = job.next_fire_time.ToDatetime(tzinfo=UTC) + timedelta(minutes=3)
    await scheduler_passes(schedulers, 3)
    assert await _runs_of(api, job) == []
    await api.channel.close()


@pytest.mark.parametrize(("fields", "path"), [
    ({"cron": "61 * * * *"}, "job.cron"),
    ({"cron": "0 0 31 2 *"}, "job.cron"),  # valid fields, never matches
    ({"cron": "* * * * * *"}, "job.cron"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "job.timezone"),
])
async def test_bad_schedules_are_invalid_argument(api: Api, sink: Sink, fields: dict[str, str], path: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.create_job("bad-cron", sink.script("/x"), **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert path in err.value.details()


async def test_schedule_service_lists_pauses_resumes_and_triggers(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    from strait_client.v1 import schedule_pb2, schedule_pb2_grpc

    front = await make_app(frozenset({Role.API, Role.WORKER}))
    api = await connect(front, settings.admin_key)
    schedules = schedule_pb2_grpc.ScheduleServiceStub(api.channel)
    job = await api.create_job("managed", sink.script("/managed"), cron="0 9 * * 1-5", timezone="Europe/Berlin")
    times = (await schedules.ListScheduleFireTimes(schedule_pb2.ListScheduleFireTimesRequest(slug="managed", count=3),
                                                   metadata=api.metadata)).fire_times
    berlin = [t.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin")) for t in times]
    assert [(t.hour, t.minute) for t in berlin] == [(9, 0)] * 3 and all(t.weekday() < 5 for t in berlin)
    assert times[0] == job.next_fire_time

    paused = (await schedules.PauseSchedule(schedule_pb2.PauseScheduleRequest(id=job.id),
                                            metadata=api.metadata)).job
    assert paused.schedule_paused and not paused.HasField("next_fire_time")
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 1)
    clock.now = times[0].ToDatetime(tzinfo=UTC) + timedelta(seconds=1)
    await scheduler_passes(schedulers, 3)
    assert await _runs_of(api, job) == []  # paused: the tick did not fire

    resumed = (await schedules.ResumeSchedule(schedule_pb2.ResumeScheduleRequest(id=job.id),
                                              metadata=api.metadata)).job
    assert not resumed.schedule_paused and resumed.next_fire_time == times[0]  # from the next tick after now

    run = (await schedules.TriggerSchedule(schedule_pb2.TriggerScheduleRequest(slug="managed"),
                                           metadata=api.metadata)).run
    assert run.metadata["triggered_by"] == "schedule_trigger"
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)

    plain = await api.create_job("plain", sink.script("/plain"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await schedules.PauseSchedule(schedule_pb2.PauseScheduleRequest(id=plain.id), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await api.channel.close()


async def test_three_scheduler_processes_fire_each_due_tick_once(settings: Settings, sink: Sink) -> None:
    """Real OS processes (`strait serve`, each with the scheduler role) racing for the same due schedules."""
    async with (serve_subprocess(settings) as (_, port), serve_subprocess(settings),
                serve_subprocess(settings)):
        api = await connect(port, settings.admin_key)
        jobs = [await api.create_job(f"race-{i}", sink.url("/race"), cron="* * * * *") for i in range(40)]
        conn = await asyncpg.connect(settings.database_url)
        try:
            # Test data: make every schedule due now rather than waiting for the next minute.
            await conn.execute("UPDATE jobs SET next_fire_time = now() - interval '1 second' WHERE cron <> ''")

            async def all_advanced() -> bool:
                return bool(await conn.fetchval(
                    "SELECT bool_and(next_fire_time > now()) FROM jobs WHERE cron <> ''"))
            await eventually(all_advanced, timeout=30)
        finally:
            await conn.close()
        for job in jobs:
            # One run per tick (a minute boundary passing meanwhile may add the next tick's run, once).
            ticks = [r.metadata["scheduled_tick"] for r in await _runs_of(api, job)]
            assert 1 <= len(ticks) == len(set(ticks)), (job.slug, ticks)
        await api.channel.close()


async def test_a_backlog_of_due_schedules_fires_and_dispatches_everything(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    """More due schedules than one pass takes (the parallel passes, and the dispatcher here yielding to them)."""
    from strait_server.scheduler.cron import BATCH

    app = await make_app()
    api = await connect(app, settings.admin_key)
    first = await api.create_job("backlog-0", sink.url("/backlog"), cron="* * * * *")
    count = 2 * BATCH + 100
    conn = await asyncpg.connect(settings.database_url)
    try:
        # Test data: the rest of the jobs written directly, all due now.
        await conn.execute("""
            INSERT INTO jobs (id, project_id, slug, name, endpoint_url, cron, next_fire_time)
            SELECT 'job_backlog' || g, $1, 'backlog-' || g, 'b', $2, '* * * * *', now() - interval '1 second'
            FROM generate_series(1, $3) AS g""", first.project_id, sink.url("/backlog"), count - 1)
        await conn.execute("UPDATE jobs SET next_fire_time = now() - interval '1 second' WHERE id = $1", first.id)
    finally:
        await conn.close()
    received = await sink.wait_for(count, "/backlog", timeout=60)
    assert len({r.run_id for r in received}) >= count
    # The dispatcher here is let go again (at once, or when a minute boundary's backlog, fired meanwhile, is done).
    cron = app.cron
    assert cron is not None

    async def released() -> bool:
        return cron.idle.is_set()
    await eventually(released, timeout=10)
    await api.channel.close()
