"""A worker whose server process is SIGKILLed reconnects to another one and readopts the runs it is still
running: each handler runs once, its result is taken by the new server, and no run is executed twice."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import asyncpg

from strait_client import TaskContext, Worker
from strait_client.v1 import run_pb2
from strait_server.config import Settings
from tests.conftest import connect, eventually
from tests.integration.test_workers import worker_job
from tests.processes import serve_subprocesses

# Two processes on one database; a dead one's runs would be recovered after 2 x 3 s without re-adoption.
SERVER_ENV = {"STRAIT_OWNER_STALE_AFTER": "3s"}


async def test_a_worker_readopts_its_runs_after_its_server_is_killed(settings: Settings) -> None:
    async with serve_subprocesses(settings, 2, **SERVER_ENV) as servers:
        (first, first_port), (_, second_port) = servers
        api = await connect(first_port, settings.admin_key)
        job = await worker_job(api, "survivor")
        # Both servers behind one target: the worker connects to the first, and to the second once the
        # first is gone (gRPC's pick_first).
        worker = Worker(f"ipv4:127.0.0.1:{first_port},127.0.0.1:{second_port}", api.key, slots=5)
        calls: list[str] = []
        release = asyncio.Event()
        running = asyncio.Event()

        @worker.handler("survivor")
        async def survivor(ctx: TaskContext, payload: Any) -> dict[str, Any]:
            calls.append(ctx.run_id)
            if len(calls) == 3:
                running.set()
            await release.wait()
            return {"run": ctx.run_id}

        serving = asyncio.create_task(worker.serve())
        try:
            await asyncio.wait_for(worker.connected.wait(), 15)
            first_session = worker.session_id
            runs = [await api.trigger(job) for _ in range(3)]
            await asyncio.wait_for(running.wait(), 15)
            first.send_signal(signal.SIGKILL)
            await first.wait()

            async def reconnected() -> bool:
                return worker.session_id != first_session and worker.connected.is_set()
            await eventually(reconnected)
            release.set()
            await api.channel.close()
            api = await connect(second_port, settings.admin_key, job.project_id)
            for run in runs:
                done = await api.wait_status(run.id, run_pb2.RUN_STATUS_COMPLETED, timeout=20)
                assert json.loads(done.output_json) == {"run": run.id} and done.attempt == 1
        finally:
            worker.stop()
            await asyncio.wait_for(serving, 15)
            await api.channel.close()
    assert sorted(calls) == sorted(r.id for r in runs)  # each handler ran once: nothing ran twice
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT lost_count, jsonb_array_length(attempt_history) AS attempts FROM runs "
                                "WHERE id = ANY($1::text[])", [r.id for r in runs])
    finally:
        await conn.close()
    assert [(r["lost_count"], r["attempts"]) for r in rows] == [(0, 1)] * 3
