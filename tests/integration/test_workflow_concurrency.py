"""Workflow concurrency: at most max_runs running runs per key, the others queued and started oldest first,
or the oldest canceled, or the newest canceled, by the workflow's strategy."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import grpc
import pytest

from strait_client.v1 import run_pb2, workflow_pb2, workflow_run_pb2
from tests.conftest import Api, eventually
from tests.integration.test_workflow_runs import Flows, step
from tests.integration.test_workflow_waits import rpc_error
from tests.sink import Received, Reply, Sink

W = workflow_pb2
R = workflow_run_pb2


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


async def limited(flows: Flows, slug: str, job: str, max_runs: int, strategy: int, key: str = "input.customer") -> None:
    definition = W.Workflow(slug=slug, steps=[step("work", job)],
                            concurrency=W.WorkflowConcurrency(max_runs=max_runs, key=key, strategy=strategy))
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=definition), metadata=flows.api.metadata)


async def statuses(flows: Flows, run_ids: list[str]) -> list[int]:
    return [(await flows.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=i), metadata=flows.api.metadata))
            .workflow_run.status for i in run_ids]


async def test_runs_over_the_limit_wait_queued_and_start_oldest_first(flows: Flows, sink: Sink) -> None:
    go = asyncio.Event()
    executing: Counter[str] = Counter()
    most: Counter[str] = Counter()
    order: list[int] = []

    async def work(request: Received) -> None:
        body = request.json()
        executing[body["customer"]] += 1
        most[body["customer"]] = max(most[body["customer"]], executing[body["customer"]])
        order.append(body["n"])
        await go.wait()
        executing[body["customer"]] -= 1

    await flows.api.create_job("work", sink.script("/work", then=Reply(action=work)))
    await limited(flows, "orders", "work", 2, W.CONCURRENCY_STRATEGY_QUEUE)
    a_runs = [(await flows.trigger("orders", run_input={"customer": "a", "n": n})) for n in range(5)]
    b_run = await flows.trigger("orders", run_input={"customer": "b", "n": 99})
    assert [r.status for r in a_runs] == [R.WORKFLOW_RUN_STATUS_RUNNING] * 2 + [R.WORKFLOW_RUN_STATUS_QUEUED] * 3
    assert b_run.status == R.WORKFLOW_RUN_STATUS_RUNNING  # another key is not held up
    assert a_runs[2].concurrency_key == "a" and b_run.concurrency_key == "b"
    await eventually(lambda: _received(sink, "/work", 3))
    assert sorted(order) == [0, 1, 99]
    assert await flows.steps(a_runs[4].id) == {}  # a queued run has started nothing
    go.set()
    for run in [*a_runs, b_run]:
        assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert most["a"] <= 2 and [n for n in order if n != 99] == [0, 1, 2, 3, 4]
    events = await flows.events(a_runs[4].id)
    assert [(e.from_status, e.to_status) for e in events if e.type == "run_status"] == [
        ("", "queued"), ("queued", "running"), ("running", "completed")]


async def _received(sink: Sink, path: str, n: int) -> bool:
    return len(sink.for_path(path)) >= n


async def test_cancel_newest_returns_the_new_run_canceled(flows: Flows, sink: Sink) -> None:
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    await limited(flows, "single", "hold", 1, W.CONCURRENCY_STRATEGY_CANCEL_NEWEST, key="")
    first = await flows.trigger("single", run_input={"customer": "a"})
    second = await flows.trigger("single", run_input={"customer": "b"})
    assert first.status == R.WORKFLOW_RUN_STATUS_RUNNING
    assert second.status == R.WORKFLOW_RUN_STATUS_CANCELED and "at most 1" in second.error
    assert await statuses(flows, [first.id]) == [R.WORKFLOW_RUN_STATUS_RUNNING]


async def test_cancel_in_progress_makes_room_for_the_new_run(flows: Flows, sink: Sink) -> None:
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    await limited(flows, "latest", "hold", 1, W.CONCURRENCY_STRATEGY_CANCEL_IN_PROGRESS)
    first = await flows.trigger("latest", run_input={"customer": "a"})
    await eventually(lambda: _received(sink, "/hold", 1))
    second = await flows.trigger("latest", run_input={"customer": "a"})
    assert second.status == R.WORKFLOW_RUN_STATUS_RUNNING
    assert await statuses(flows, [first.id, second.id]) == [R.WORKFLOW_RUN_STATUS_CANCELED,
                                                             R.WORKFLOW_RUN_STATUS_RUNNING]
    job_run = await flows.api.get_run((await flows.steps(first.id))["work"].job_run_id)
    assert job_run.status == run_pb2.RUN_STATUS_CANCELED  # its job run was canceled with it


async def test_a_key_that_cannot_be_computed_is_refused_and_a_queued_run_can_be_canceled(flows: Flows) -> None:
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    await limited(flows, "keyed", "hold", 1, W.CONCURRENCY_STRATEGY_QUEUE)
    err = await rpc_error(flows.defs.TriggerWorkflow(
        W.TriggerWorkflowRequest(slug="keyed", input_json=json.dumps({"nobody": 1})), metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "input_json" in (err.details() or "")
    listed = await flows.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(), metadata=flows.api.metadata)
    assert list(listed.workflow_runs) == []  # nothing was stored
    first = await flows.trigger("keyed", run_input={"customer": "a"})
    queued = await flows.trigger("keyed", run_input={"customer": "a"})
    canceled = await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=queued.id), metadata=flows.api.metadata)
    assert canceled.workflow_run.status == R.WORKFLOW_RUN_STATUS_CANCELED
    assert await statuses(flows, [first.id]) == [R.WORKFLOW_RUN_STATUS_RUNNING]
