"""A real `strait serve` subprocess, killed or terminated mid-run: nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc

from strait_client.v1 import job_pb2, job_pb2_grpc, run_pb2
from strait_server.app import Role
from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.processes import free_port, serve_subprocess
from tests.sink import Reply, Sink

S = run_pb2


async def test_sigkill_mid_run_runs_are_recovered_by_another_process(
        settings: Settings, make_app: AppFactory, sink: Sink) -> None:
    gate = asyncio.Event()
    url = sink.script("/work", *[Reply(200, '{"first": true}', block=gate)] * 5, then=Reply(200, '{"second": true}'))
    async with serve_subprocess(settings) as (proc, port):
        api = await connect(port, settings.admin_key)
        job = await api.create_job("work", url, max_attempts=3,
                                   retry_policy=job_pb2.RetryPolicy(initial_delay={"nanos": 50_000_000}))
        runs = [await api.trigger(job, payload_json=f'{{"i": {i}}}') for i in range(5)]
        await sink.wait_for(5, "/work")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await api.channel.close()

    # Another process (here: in-process components) notices the dead owner and re-dispatches.
    survivor = await make_app()
    api = await connect(survivor, settings.admin_key, job.project_id)
    for r in runs:
        done = await api.wait_status(r.id, S.RUN_STATUS_COMPLETED, timeout=20)
        # Lost through no fault of its own: delivered again as the same attempt, which did not count.
        assert (done.attempt, done.lost_count, done.output_json) == (1, 1, '{"second": true}')
        events = await api.events(r.id)
        lost = [e for e in events if e.from_status == S.RUN_STATUS_EXECUTING and e.to_status == S.RUN_STATUS_QUEUED]
        assert len(lost) == 1 and lost[0].message == "dispatcher lost; requeued without spending an attempt"
    gate.set()
    await api.channel.close()


async def test_sigterm_drains_in_flight_work_and_hands_back_the_rest(
        settings: Settings, make_app: AppFactory, sink: Sink) -> None:
    gate = asyncio.Event()
    quick = sink.script("/quick", then=Reply(200, '{"quick": true}', delay=0.5))
    stuck = sink.script("/stuck", *[Reply(200, block=gate)] * 2, then=Reply(200, '{"retried": true}'))
    async with serve_subprocess(settings, STRAIT_DRAIN_TIMEOUT="2s") as (proc, port):
        api = await connect(port, settings.admin_key)
        quick_job = await api.create_job("quick", quick)
        stuck_job = await api.create_job("stuck", stuck)
        quick_runs = [await api.trigger(quick_job) for _ in range(3)]
        stuck_runs = [await api.trigger(stuck_job) for _ in range(2)]
        await sink.wait_for(3, "/quick")
        await sink.wait_for(2, "/stuck")
        project_id = quick_job.project_id
        await api.channel.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0

    checker = await make_app(frozenset({Role.API}))
    api = await connect(checker, settings.admin_key, project_id)
    for r in quick_runs:  # drained: finished before the process exited
        assert (await api.get_run(r.id)).status == S.RUN_STATUS_COMPLETED
    for r in stuck_runs:  # handed back at once, without using an attempt
        run = await api.get_run(r.id)
        assert run.status == S.RUN_STATUS_QUEUED and run.attempt == 0
        assert (await api.events(r.id))[-1].message == "handed back at shutdown"

    # Any other dispatcher picks them up straight away.
    await make_app(frozenset({Role.WORKER, Role.SCHEDULER}))
    for r in stuck_runs:
        done = await api.wait_status(r.id, S.RUN_STATUS_COMPLETED)
        assert done.attempt == 1 and done.output_json == '{"retried": true}'
    gate.set()
    await api.channel.close()


async def test_serve_refuses_clearly_without_backends(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"STRAIT_DATABASE_URL and STRAIT_REDIS_URL must be set" in err

    env.update(STRAIT_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", STRAIT_REDIS_URL=settings.redis_url,
               STRAIT_JWT_SIGNING_KEY="k" * 32)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", env=env,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"cannot reach PostgreSQL" in err


async def test_strait_dev_serves_with_embedded_backends_and_prints_a_working_key(tmp_path: Path) -> None:
    """The README's first command, minus the install: embedded PostgreSQL and Redis, a dev key that works."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "strait_server", "dev", "--address", f"127.0.0.1:{port}",
        "--data-dir", str(tmp_path), env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        key = ""
        while not key:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "strait dev exited before printing its API key"
            if line.strip().startswith("export STRAIT_API_KEY="):
                key = line.strip().split("=", 1)[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            jobs = job_pb2_grpc.JobServiceStub(channel)
            md = (("authorization", f"Bearer {key}"),)
            # strait dev allows local endpoints; nothing listens on port 9, which is fine for creating a job.
            job = (await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
                slug="dev-check", endpoint_url="http://127.0.0.1:9/x")), metadata=md)).job
            listed = await jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=md)
            assert [j.id for j in listed.jobs] == [job.id]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
