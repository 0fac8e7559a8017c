"""Retention: finished runs past STRAIT_RETENTION go, with their events and idempotency keys; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import App, Role
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink

S = run_pb2
FAST_RETRY = job_pb2.RetryPolicy(initial_delay=Duration(nanos=20_000_000), max_delay=Duration(nanos=50_000_000))
RETENTION = dict(retention=timedelta(hours=1), retention_interval=timedelta(milliseconds=100),
                 retention_batch_size=2)


async def _backdate(app: App, run_ids: list[str], hours: float) -> None:
    """Test data: makes finished runs look as if they had finished `hours` ago."""
    assert app.pool is not None
    await app.pool.execute("UPDATE runs SET finish_time = now() - make_interval(secs => $2) WHERE id = ANY($1)",
                           run_ids, hours * 3600)


async def _gone(api: Api, run_id: str) -> bool:
    try:
        await api.get_run(run_id)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return True
    return False


async def _count(app: App, table: str, run_ids: list[str]) -> int:
    assert app.pool is not None and table in ("runs", "run_events", "idempotency_keys")
    column = "id" if table == "runs" else "run_id"
    return int(await app.pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1)", run_ids))


async def _completed(api: Api, job: job_pb2.Job, **options: object) -> str:
    run = await api.trigger(job, **options)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    return run.id


async def test_old_finished_runs_go_with_their_events_and_keys(make_app: AppFactory, settings: Settings,
                                                              sink: Sink) -> None:
    app = await make_app(**RETENTION)
    api = await connect(app, settings.admin_key)
    ok = await api.create_job("ok", sink.script("/ok"))
    bad = await api.create_job("bad", sink.script("/bad", then=Reply(400)), max_attempts=1, retry_policy=FAST_RETRY)
    old = [await _completed(api, ok, idempotency_key=f"k{i}") for i in range(4)]
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    canceled = (await api.trigger(ok, scheduled_time=later)).id
    await api.runs.CancelRun(run_pb2.CancelRunRequest(id=canceled), metadata=api.metadata)
    old.append(canceled)
    recent = await _completed(api, ok, idempotency_key="recent")
    dead = (await api.trigger(bad)).id
    await api.wait_status(dead, S.RUN_STATUS_DEAD_LETTER)
    waiting = (await api.trigger(ok, scheduled_time=later)).id  # delayed: not finished, however old
    assert app.pool is not None
    await app.pool.execute("UPDATE runs SET create_time = now() - interval '2 days' WHERE id = $1", waiting)
    assert await _count(app, "idempotency_keys", old) == 4

    await _backdate(app, [*old, dead], hours=2)
    for run_id in old:
        await eventually(lambda run_id=run_id: _gone(api, run_id))
    assert await _count(app, "runs", old) == 0
    assert await _count(app, "run_events", old) == 0
    assert await _count(app, "idempotency_keys", old) == 0
    # Kept: a run that finished within the retention, a dead-lettered run (it waits for a replay), a
    # run that has not finished.
    assert (await api.get_run(recent)).status == S.RUN_STATUS_COMPLETED
    assert (await api.get_run(dead)).status == S.RUN_STATUS_DEAD_LETTER
    assert (await api.get_run(waiting)).status == S.RUN_STATUS_DELAYED
    for run_id in (recent, dead, waiting):
        assert await api.events(run_id)
    assert await _count(app, "idempotency_keys", [recent]) == 1
    # The deleted run's key went with it: the same key now makes a new run instead of naming a missing one.
    again = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=ok.id, options=job_pb2.RunOptions(idempotency_key="k0")), metadata=api.metadata)
    assert not again.idempotent_repeat and again.run.id not in old
    await api.channel.close()


async def test_a_locked_run_is_skipped_not_waited_for(make_app: AppFactory, settings: Settings,
                                                     sink: Sink) -> None:
    app = await make_app(retention=timedelta(0))  # runs are prepared before any sweep starts
    api = await connect(app, settings.admin_key)
    job = await api.create_job("ok", sink.script("/ok"))
    held, *others = [await _completed(api, job) for _ in range(4)]
    await _backdate(app, others, hours=2)
    await _backdate(app, [held], hours=3)  # the oldest: the first batch would have to wait for it
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", held)
            await make_app(frozenset({Role.SCHEDULER}), **RETENTION)
            for run_id in others:
                await eventually(lambda run_id=run_id: _gone(api, run_id))
            assert await _count(app, "runs", [held]) == 1
        await eventually(lambda: _gone(api, held))
        assert await _count(app, "run_events", [held, *others]) == 0
    finally:
        await conn.close()
        await api.channel.close()


async def test_zero_retention_keeps_every_run(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(retention=timedelta(0), retention_interval=timedelta(milliseconds=50))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("ok", sink.script("/ok"))
    run_id = await _completed(api, job)
    await _backdate(app, [run_id], hours=24 * 365)
    # The pass still runs (it forgets day-old trigger request ids): wait for one to see it did not delete runs.
    await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, request_id="r1"), metadata=api.metadata)
    assert app.pool is not None
    pool = app.pool
    await pool.execute("UPDATE trigger_requests SET create_time = now() - interval '25 hours'")

    async def forgotten() -> bool:
        return await pool.fetchval("SELECT count(*) FROM trigger_requests") == 0
    await eventually(forgotten)
    assert (await api.get_run(run_id)).status == S.RUN_STATUS_COMPLETED
    await api.channel.close()
