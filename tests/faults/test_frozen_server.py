"""A server or a worker that stops answering without closing its connections (SIGSTOP: what a machine gone behind
a NAT or a load balancer looks like to its peer): keepalive pings notice it, on both sides."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from strait_client.v1 import run_pb2
from strait_client.worker import TaskContext, Worker
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, connect, eventually
from tests.integration.test_client import address
from tests.integration.test_workers import serving, worker_job
from tests.processes import serve_subprocess

S = run_pb2


async def test_a_worker_gives_up_a_silent_connection_and_connects_again(settings: Settings) -> None:
    async with serve_subprocess(settings) as (proc, port):
        api = await connect(port, settings.admin_key)
        job = await worker_job(api, "work")
        worker = Worker(f"127.0.0.1:{port}", api.key)  # the default settings: keepalive pings on
        ran: list[str] = []

        @worker.handler("work")
        async def work(ctx: TaskContext, payload: Any) -> None:
            ran.append(ctx.run_id)

        async with serving(worker):
            first_session = worker.session_id
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                # Nothing breaks the connection: only an unanswered ping tells the worker it is dead.
                await eventually(lambda: _disconnected(worker), timeout=45, interval=0.2)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            await asyncio.wait_for(worker.connected.wait(), 60)
            assert worker.session_id not in ("", first_session)
            run = await api.trigger(job)
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
        assert ran == [run.id]
        await api.channel.close()


async def _disconnected(worker: Worker) -> bool:
    return not worker.connected.is_set()


# A worker that holds every run it is given, saying which on its standard output.
HOLDING_WORKER = """
import asyncio, os, sys
from strait_client import Worker
worker = Worker(os.environ["STRAIT_ADDRESS"], os.environ["STRAIT_API_KEY"], slots=5)

@worker.handler("held")
async def held(ctx, payload):
    print(ctx.run_id, flush=True)
    await asyncio.Event().wait()

worker.run()
"""


async def test_the_runs_of_a_frozen_worker_go_to_another_one_without_spending_attempts(app: App, api: Api) -> None:
    job = await worker_job(api, "held", max_attempts=1)
    frozen = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDING_WORKER, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "STRAIT_ADDRESS": address(app), "STRAIT_API_KEY": api.key})
    try:
        runs = [await api.trigger(job) for _ in range(3)]
        assert frozen.stdout is not None
        started = {(await asyncio.wait_for(frozen.stdout.readline(), 30)).decode().strip() for _ in runs}
        assert started == {r.id for r in runs}
        os.kill(frozen.pid, signal.SIGSTOP)
        finished: list[str] = []
        other = Worker(address(app), api.key)

        @other.handler("held")
        async def finish(ctx: TaskContext, payload: Any) -> None:
            finished.append(ctx.run_id)

        async with serving(other):
            # The server's pings go unanswered: it drops the stream, and the runs with it, within 40 s.
            done = [await api.wait_status(r.id, S.RUN_STATUS_COMPLETED, timeout=60) for r in runs]
        assert sorted(finished) == sorted(r.id for r in runs)
        assert [(r.attempt, r.lost_count) for r in done] == [(1, 1)] * 3
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        await frozen.wait()
