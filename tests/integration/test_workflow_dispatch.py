"""How a step's job run reaches its endpoint: the engine hands the runs a move starts to the dispatcher of its own
process in the move's transaction. They are still ordinary runs (the same events as any claimed run), and flow
control still holds for them: a job's concurrency limit is never exceeded by the steps that run it."""

from __future__ import annotations

import asyncio

from strait_client.v1 import run_pb2, workflow_run_pb2
from tests.conftest import Api
from tests.integration.test_workflow_runs import Flows, step
from tests.sink import Received, Reply, Sink

R = workflow_run_pb2


async def test_a_step_run_has_the_events_of_any_claimed_run(api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    await flows.job("a")
    await flows.job("b")
    await flows.create(step("a", "a"), step("b", "b", "a"))
    run = await flows.trigger()
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    for s in (await flows.steps(run.id)).values():
        events = await api.events(s.job_run_id)
        assert [(e.sequence, e.from_status, e.to_status) for e in events if e.type == "status_change"] == [
            (1, run_pb2.RUN_STATUS_UNSPECIFIED, run_pb2.RUN_STATUS_QUEUED),
            (2, run_pb2.RUN_STATUS_QUEUED, run_pb2.RUN_STATUS_EXECUTING),
            (3, run_pb2.RUN_STATUS_EXECUTING, run_pb2.RUN_STATUS_COMPLETED)]
        job_run = await api.get_run(s.job_run_id)
        assert job_run.attempt == 1 and job_run.status == run_pb2.RUN_STATUS_COMPLETED


async def test_steps_of_a_job_with_a_concurrency_limit_never_exceed_it(api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    executing, most = 0, 0

    async def work(_: Received) -> None:
        nonlocal executing, most
        executing += 1
        most = max(most, executing)
        await asyncio.sleep(0.05)
        executing -= 1

    await flows.job("root")
    await flows.job("limited", then=Reply(action=work), max_concurrency=1)
    await flows.create(step("root", "root"), *[step(f"f{i}", "limited", "root") for i in range(4)])
    run = await flows.trigger()
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert len(sink.for_path("/limited")) == 4 and most == 1
