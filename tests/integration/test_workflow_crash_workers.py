"""A 202-step workflow of HTTP and worker steps survives its server being SIGKILLed three times: a `strait serve`
process running lanes of alternating HTTP job steps and worker job steps (an SDK worker connected to it, reconnecting
to each new server on the same address) is killed mid-run and restarted on the same database. Every step still
completes once with one job run, passes its output on, and the run completes."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from typing import Any

import asyncpg

from strait_client import TaskContext, Worker
from strait_server.config import Settings
from tests.conftest import connect, eventually
from tests.integration.test_workers import worker_job
from tests.integration.test_workflow_runs import Flows, R, step
from tests.processes import free_port, serve_subprocess
from tests.sink import Received, Reply, Sink
from tests.workflow_checks import completed_once

LANES, CHAIN = 10, 20  # 202 steps: a root, 200 in lanes, a join
SERVER_ENV = {"STRAIT_OWNER_STALE_AFTER": "1s"}


def dag() -> dict[str, tuple[str, list[str]]]:
    """ref -> (job, depends_on): a root, lanes of chains whose steps alternate HTTP and worker jobs, a join."""
    steps: dict[str, tuple[str, list[str]]] = {"start": ("http", [])}
    for k in range(LANES):
        for i in range(CHAIN):
            steps[f"c{k}_{i}"] = ("http" if i % 2 else "wk", [f"c{k}_{i - 1}" if i else "start"])
    steps["end"] = ("wk", [f"c{k}_{CHAIN - 1}" for k in range(LANES)])
    return steps


def template(ref: str, parents: list[str]) -> str:
    seen = ", ".join(f'"{{{{ steps.{p}.output.ref }}}}"' for p in parents)
    return f'{{"ref": "{ref}", "after": [{seen}]}}'


async def test_a_workflow_of_http_and_worker_steps_survives_three_sigkills(settings: Settings, sink: Sink) -> None:
    steps = dag()
    port = free_port()

    def answer(received: Received) -> str:
        return json.dumps({"ref": received.json()["ref"]})
    url = sink.script("/step", then=Reply(delay=0.03, answer=answer))
    async with AsyncExitStack() as servers:
        proc, _ = await servers.enter_async_context(serve_subprocess(settings, port, **SERVER_ENV))
        api = await connect(port, settings.admin_key)
        await api.create_job("http", url)
        job = await worker_job(api, "wk")
        worker = Worker(f"127.0.0.1:{port}", api.key, slots=10)
        ran: list[str] = []

        @worker.handler("wk")
        async def work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
            ran.append(payload["ref"])
            await asyncio.sleep(0.03)  # the work
            return {"ref": payload["ref"]}

        serving = asyncio.create_task(worker.serve())
        try:
            flows = Flows(api, sink)
            await flows.create(*[step(ref, kind, *parents, input_template_json=template(ref, parents))
                                 for ref, (kind, parents) in steps.items()])
            run = await flows.trigger()
            conn = await asyncpg.connect(settings.database_url)
            try:
                for completed in (40, 100, 160):  # kill mid-run, three times, at growing progress
                    async def reached(n: int = completed) -> bool:
                        done = await conn.fetchval("SELECT count(*) FROM workflow_step_runs WHERE "
                                                   "workflow_run_id = $1 AND status = 'completed'", run.id)
                        return bool(done >= n)
                    await eventually(reached, timeout=60)
                    proc.kill()
                    await proc.wait()
                    await api.channel.close()
                    proc, _ = await servers.enter_async_context(serve_subprocess(settings, port, **SERVER_ENV))
                    api = await connect(port, settings.admin_key, job.project_id)
                done = await Flows(api, sink).wait(run.id, timeout=120)
                assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
                parents = {ref: ps for ref, (_, ps) in steps.items()}
                rows = await completed_once(conn, run.id, parents)
            finally:
                await conn.close()
            listed = await Flows(api, sink).steps(run.id)
            for ref, s in listed.items():
                assert json.loads(s.output_json) == {"ref": ref} and s.job_run_id == rows[ref]["job_run_id"]
        finally:
            worker.stop()
            await asyncio.wait_for(serving, 30)
            await api.channel.close()
    worker_steps = [ref for ref, (kind, _) in steps.items() if kind == "wk"]
    assert set(ran) == set(worker_steps)  # every worker step ran (some more than once: at least once)
