"""A Redis that stops answering (SIGSTOP) under running servers, on a Redis of the test's own."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from strait_client.v1 import run_pb2
from strait_client.worker import TaskContext, Worker
from strait_server.app import App, Role
from strait_server.config import Settings
from tests.conftest import AppFactory, connect, eventually
from tests.integration.test_client import address
from tests.integration.test_workers import serving, worker_job
from tests.own_redis import own_redis
from tests.sink import Reply, Sink

S = run_pb2


async def test_no_trigger_waits_on_a_frozen_redis(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    async with own_redis() as rd:
        # Rate limits on: every call counts in Redis.
        app = await make_app(redis_url=rd.url, api_rate_limit=100_000, api_rate_window=timedelta(minutes=1))
        api = await connect(app, settings.admin_key)
        job = await api.create_job("work", sink.url("/work"))
        await api.trigger(job)
        slowest = 0.0
        with rd.frozen():
            for _ in range(20):
                started = time.monotonic()
                await api.trigger(job)
                slowest = max(slowest, time.monotonic() - started)
        # Before: the first calls waited out the 3 s socket timeout. Now at most one short Redis timeout.
        assert slowest < 1.5, slowest
        await api.channel.close()


async def test_watchers_see_a_run_finish_promptly_while_redis_is_frozen(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    """The watcher's process does not dispatch: the run's end reaches it only through Redis, or its polling."""
    gate = asyncio.Event()
    async with own_redis() as rd:
        api_app = await make_app(frozenset({Role.API}), redis_url=rd.url)
        await make_app(frozenset({Role.WORKER, Role.SCHEDULER}), redis_url=rd.url)
        api = await connect(api_app, settings.admin_key)
        job = await api.create_job("work", sink.script("/work", Reply(200, block=gate)))
        run = await api.trigger(job)
        await sink.wait_for(1, "/work")
        stream = api.runs.WatchRun(run_pb2.WatchRunRequest(run_id=run.id), metadata=api.metadata)
        with rd.frozen():
            gate.set()
            started = time.monotonic()
            async for message in stream:
                if message.HasField("event") and message.event.to_status == S.RUN_STATUS_COMPLETED:
                    break
            took = time.monotonic() - started
        # Before: the watcher waited for a wake-up that never came, until its 15 s keepalive.
        assert took < 5, took
        await api.channel.close()


async def test_a_cancel_in_another_process_reaches_the_worker_while_redis_is_frozen(
        make_app: AppFactory, settings: Settings) -> None:
    """The worker's server hears of the cancel through Redis, or, while Redis does not answer, by polling."""
    async with own_redis() as rd:
        hub_app = await make_app(redis_url=rd.url)
        other_app = await make_app(frozenset({Role.API}), redis_url=rd.url)
        api = await connect(hub_app, settings.admin_key)
        job = await worker_job(api, "long")
        other = await connect(other_app, settings.admin_key, job.project_id)
        started, stopped = asyncio.Event(), asyncio.Event()
        worker = Worker(address(hub_app), api.key)

        @worker.handler("long")
        async def long(ctx: TaskContext, payload: Any) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

        async with serving(worker):
            run = await api.trigger(job)
            await asyncio.wait_for(started.wait(), 15)
            with rd.frozen():
                # Once the worker's server knows Redis is not answering (and has looked at its runs once):
                await eventually(lambda: _not_healthy(hub_app))
                await other.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id), metadata=other.metadata)
                # Before: nothing reached the worker until Redis answered again.
                await asyncio.wait_for(stopped.wait(), 10)
        await api.channel.close()
        await other.channel.close()


async def _not_healthy(app: App) -> bool:
    return app.events is not None and not app.events.healthy


async def test_a_burst_of_callers_stays_within_the_redis_connection_budget(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    async with own_redis() as rd:
        app = await make_app(redis_url=rd.url, api_rate_limit=100_000, api_rate_window=timedelta(minutes=1),
                             redis_max_connections=8)
        api = await connect(app, settings.admin_key)
        job = await api.create_job("work", sink.url("/work"))
        runs = await asyncio.gather(*(api.trigger(job) for _ in range(64)))
        assert len({r.id for r in runs}) == 64
        client = aioredis.from_url(rd.url)
        # This test's own client is one more connection.
        assert len(await client.client_list()) <= 8 + 1
        await client.aclose()
        await api.channel.close()
