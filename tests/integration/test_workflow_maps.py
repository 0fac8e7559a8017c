"""Map steps end to end: one job run per item of a list computed from earlier outputs, a sliding window of at
most max_concurrency, outputs joined in item order, limits, tolerated failures and cancellation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from strait_client.v1 import run_pb2, workflow_pb2, workflow_run_pb2
from tests.conftest import Api, eventually
from tests.integration.test_workflow_runs import Flows, bodies, step
from tests.sink import Received, Reply, Sink

W = workflow_pb2
R = workflow_run_pb2


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


def mapped(ref: str, job: str, items: str, *depends_on: str, template: str = "", **spec: Any) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), job=W.JobStep(job_slug=job),
                  map=W.MapSpec(items=items, **spec), input_template_json=template)


async def instances(flows: Flows, run_id: str, ref: str) -> list[R.StepRun]:
    reply = await flows.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run_id, step_ref=ref),
                                          metadata=flows.api.metadata)
    return list(reply.step_runs)


async def test_a_map_runs_one_instance_per_item_in_a_window_and_joins_in_item_order(flows: Flows,
                                                                                     sink: Sink) -> None:
    files = [f"f{i}" for i in range(40)]
    await flows.job("list", then=Reply(body=json.dumps({"files": files})))
    executing, most = 0, 0

    async def work(request: Received) -> None:
        nonlocal executing, most
        executing += 1
        most = max(most, executing)
        await asyncio.sleep(0)  # let other instances' requests arrive meanwhile
        executing -= 1

    await flows.api.create_job("size", sink.url("/size"))
    for i in range(40):
        # Answers in another order than the items': the join must still get them in item order.
        sink.script("/size", Reply(body=json.dumps({"n": (i * 7) % 40}), action=work))
    await flows.job("join")
    await flows.create(step("list", "list"),
                       mapped("size", "size", "steps.list.output.files", "list", max_concurrency=5,
                              template='{"file": "{{ item }}", "at": "{{ index }}"}'),
                       step("join", "join", "size"))
    run = await flows.trigger()
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    received = bodies(sink, "/size")
    assert sorted(r["at"] for r in received) == list(range(40)) and {r["file"] for r in received} == set(files)
    assert most <= 5
    node, *rows = await instances(flows, run.id, "size")
    assert node.map_index == -1 and node.status == R.STEP_RUN_STATUS_COMPLETED
    assert (node.map_counts.total, node.map_counts.done, node.map_counts.failed) == (40, 40, 0)
    assert [r.map_index for r in rows] == list(range(40))
    assert len({r.job_run_id for r in rows}) == 40  # one job run per instance
    by_index = [json.loads(r.output_json) for r in rows]
    [join] = bodies(sink, "/join")
    assert join["parent_outputs"]["size"] == by_index == json.loads(node.output_json)
    assert "size" in [s.step_ref for s in (await flows.runs.ListStepRuns(
        R.ListStepRunsRequest(workflow_run_id=run.id), metadata=flows.api.metadata)).step_runs]
    assert len((await flows.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id),
                                              metadata=flows.api.metadata)).step_runs) == 3  # no instances


async def test_the_window_never_holds_more_than_max_concurrency_executing(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.api.create_job("hold", sink.script("/hold", then=Reply(block=release)))
    await flows.create(mapped("fan", "hold", "[1, 2, 3, 4, 5, 6, 7]", max_concurrency=3))
    run = await flows.trigger()
    await eventually(lambda: _count(sink, "/hold", 3))
    rows = (await instances(flows, run.id, "fan"))[1:]
    assert sorted(r.status for r in rows) == [R.STEP_RUN_STATUS_PENDING] * 4 + [R.STEP_RUN_STATUS_RUNNING] * 3
    assert len(sink.for_path("/hold")) == 3
    release.set()
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert len(sink.for_path("/hold")) == 7


async def _count(sink: Sink, path: str, n: int) -> bool:
    return len(sink.for_path(path)) >= n


async def test_map_limits_empty_lists_and_bad_items(flows: Flows, sink: Sink) -> None:
    await flows.job("each")
    await flows.create(mapped("big", "each", "input.items", max_items=5), slug="capped")
    run = await flows.wait((await flows.trigger("capped", run_input={"items": list(range(6))})).id)
    [node] = await instances(flows, run.id, "big")
    assert node.status == R.STEP_RUN_STATUS_FAILED and node.error.startswith("map_too_large")
    assert sink.for_path("/each") == []  # nothing was created
    empty = await flows.wait((await flows.trigger("capped", run_input={"items": []})).id)
    [node] = await instances(flows, empty.id, "big")
    assert empty.status == R.WORKFLOW_RUN_STATUS_COMPLETED and json.loads(node.output_json) == []
    bad = await flows.wait((await flows.trigger("capped", run_input={"items": "nope"})).id)
    assert (await instances(flows, bad.id, "big"))[0].error.startswith("template_error")


async def test_tolerated_failures_and_failing_maps(flows: Flows, sink: Sink) -> None:
    await flows.job("flaky", max_attempts=1)
    for i in range(4):
        sink.script("/flaky", Reply(status=500 if i == 1 else 200, body=json.dumps({"i": i})))
    await flows.create(mapped("try", "flaky", "[0, 1, 2, 3]", max_concurrency=1, tolerated_failure_count=1),
                       slug="tolerant")
    run = await flows.wait((await flows.trigger("tolerant")).id)
    node, *rows = await instances(flows, run.id, "try")
    assert run.status == R.WORKFLOW_RUN_STATUS_COMPLETED and node.map_counts.failed == 1
    assert [json.loads(r.output_json) if r.output_json else None for r in rows] == [{"i": 0}, None, {"i": 2}, {"i": 3}]
    assert rows[1].status == R.STEP_RUN_STATUS_FAILED
    for i in range(4):
        sink.script("/flaky", Reply(status=500 if i == 1 else 200))
    await flows.create(mapped("try", "flaky", "[0, 1, 2, 3]", max_concurrency=1), slug="strict")
    failed = await flows.wait((await flows.trigger("strict")).id)
    assert failed.status == R.WORKFLOW_RUN_STATUS_FAILED
    assert (await instances(flows, failed.id, "try"))[0].error == "1 of 4 map instances failed"


async def test_canceling_a_run_cancels_its_map_instances(flows: Flows, sink: Sink) -> None:
    await flows.api.create_job("hold", sink.script("/hold", then=Reply(block=asyncio.Event())))
    await flows.create(mapped("fan", "hold", "[1, 2, 3, 4, 5]", max_concurrency=2))
    run = await flows.trigger()
    await eventually(lambda: _count(sink, "/hold", 2))
    await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    rows = await instances(flows, run.id, "fan")
    assert {r.status for r in rows} == {R.STEP_RUN_STATUS_CANCELED}
    job_runs = [await flows.api.get_run(r.job_run_id) for r in rows if r.job_run_id]
    assert len(job_runs) == 2 and all(j.status == run_pb2.RUN_STATUS_CANCELED for j in job_runs)
    err = await asyncio.gather(flows.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id, step_ref="B-a-d"),
                                                       metadata=flows.api.metadata), return_exceptions=True)
    assert isinstance(err[0], grpc.aio.AioRpcError) and err[0].code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_maps_instances_are_listed_a_page_at_a_time(flows: Flows, sink: Sink) -> None:
    await flows.job("each")
    await flows.create(mapped("fan", "each", "input.items"))
    run = await flows.wait((await flows.trigger(run_input={"items": list(range(7))})).id)
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        reply = await flows.runs.ListStepRuns(R.ListStepRunsRequest(
            workflow_run_id=run.id, step_ref="fan", page_size=3, page_token=token), metadata=flows.api.metadata)
        seen += [s.map_index for s in reply.step_runs]
        pages, token = pages + 1, reply.next_page_token
        if not token:
            break
    assert seen == list(range(-1, 7)) and pages == 3  # the step, then its instances in item order
    other = await flows.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id, step_ref="fan", page_size=3),
                                          metadata=flows.api.metadata)
    err = await asyncio.gather(flows.runs.ListStepRuns(R.ListStepRunsRequest(
        workflow_run_id=run.id, step_ref="other", page_token=other.next_page_token), metadata=flows.api.metadata),
        return_exceptions=True)
    assert isinstance(err[0], grpc.aio.AioRpcError) and err[0].code() == grpc.StatusCode.INVALID_ARGUMENT
