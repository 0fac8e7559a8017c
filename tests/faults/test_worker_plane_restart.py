"""PostgreSQL restarted and crashed under a `strait serve` whose runs an SDK worker executes, on a cluster of the
test's own: the worker plane's loops (claim, settle, heartbeat, run checks) and the worker's sessions survive,
and every run completes, flow-controlled ones within their limit."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial
from typing import Any

from strait_client.v1 import job_pb2
from strait_client.worker import TaskContext, Worker
from strait_server.config import Settings
from tests.conftest import connect, eventually
from tests.faults.test_postgres_restart import _statuses
from tests.integration.test_workers import serving, worker_job
from tests.own_postgres import own_postgres
from tests.processes import serve_subprocess

PLAIN, LIMITED, LIMIT = 3_000, 300, 5


async def test_restarts_under_a_worker_load_complete_every_run_within_its_limit(settings: Settings) -> None:
    async with own_postgres() as pg:
        own = settings.with_(database_url=pg.url)
        async with serve_subprocess(own) as (proc, port):
            api = await connect(port, own.admin_key)
            plain = await worker_job(api, "plain", max_attempts=3)
            limited = await worker_job(api, "limited", max_attempts=3, max_concurrency=LIMIT)
            for job, count in ((plain, PLAIN), (limited, LIMITED)):
                for start in range(0, count, 1000):
                    await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
                        job_pb2.RunOptions() for _ in range(min(1000, count - start))]), metadata=api.metadata)
            executions: Counter[str] = Counter()
            running = 0
            most_limited = 0
            worker = Worker(f"127.0.0.1:{port}", api.key, slots=50)

            @worker.handler("plain")
            async def work(ctx: TaskContext, payload: Any) -> None:
                executions[ctx.run_id] += 1
                await asyncio.sleep(0.005)  # a handler's work, not synchronisation

            @worker.handler("limited")
            async def limited_work(ctx: TaskContext, payload: Any) -> None:
                nonlocal running, most_limited
                executions[ctx.run_id] += 1
                running += 1
                most_limited = max(most_limited, running)
                try:
                    await asyncio.sleep(0.005)
                finally:
                    running -= 1

            async with serving(worker):
                for i in range(6):
                    # Runs are being executed (again) before each restart: it hits runs in every state.
                    await eventually(partial(_more, executions, len(executions) + 100), timeout=60, interval=0.05)
                    await pg.restart("fast" if i % 2 == 0 else "immediate")

                async def all_finished() -> Counter[str] | None:
                    statuses = await _statuses(pg)
                    done = sum(statuses.values()) == PLAIN + LIMITED and set(statuses) == {"completed"}
                    return statuses if done else None
                try:
                    await eventually(all_finished, timeout=120, interval=0.5)
                except AssertionError as err:
                    raise AssertionError(f"runs left unfinished: {await _statuses(pg)}") from err
            await api.channel.close()
            assert proc.returncode is None, "the server died"

    assert len(executions) == PLAIN + LIMITED
    # A result lost with a crash is executed again at most once more; the limit held throughout.
    assert max(executions.values()) <= 2, executions.most_common(5)
    assert most_limited <= LIMIT


async def _more(executions: Counter[str], count: int) -> bool:
    return len(executions) >= count
