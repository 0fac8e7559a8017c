"""Sub-workflow steps end to end: a child run started in the parent's transaction, its outcome and output
moving the parent step on, cancellation through the whole tree, and the depth limit."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import workflow_pb2, workflow_run_pb2
from strait_server.config import Settings
from tests.conftest import Api, eventually
from tests.integration.test_workflow_maps import mapped
from tests.integration.test_workflow_runs import Flows, bodies, step
from tests.sink import Reply, Sink

W = workflow_pb2
R = workflow_run_pb2


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


def child(ref: str, slug: str, *depends_on: str, **fields: object) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), sub_workflow=W.SubWorkflowStep(workflow_slug=slug),
                  **fields)  # type: ignore[arg-type]


async def get_run(flows: Flows, run_id: str) -> R.WorkflowRun:
    reply = await flows.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run_id), metadata=flows.api.metadata)
    return reply.workflow_run


async def test_a_child_run_feeds_its_output_to_the_parent(flows: Flows, sink: Sink) -> None:
    await flows.job("x")
    await flows.job("y", then=Reply(body='{"total": 42}'))
    await flows.job("after")
    await flows.create(step("x", "x"), step("y", "y", "x"), slug="inner")
    await flows.create(child("inner", "inner", input_template_json='{"order": "{{ input.order }}"}'),
                       step("after", "after", "inner"), slug="outer")
    run = await flows.trigger("outer", run_input={"order": 5})
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    inner = (await flows.steps(run.id))["inner"]
    assert inner.status == R.STEP_RUN_STATUS_COMPLETED and inner.child_workflow_run_id.startswith("wfr_")
    child_run = await get_run(flows, inner.child_workflow_run_id)
    assert child_run.status == R.WORKFLOW_RUN_STATUS_COMPLETED and json.loads(child_run.input_json) == {"order": 5}
    assert (child_run.parent_workflow_run_id, child_run.parent_step_run_id) == (run.id, inner.id)
    assert json.loads(inner.output_json) == {"y": {"total": 42}}  # the child's last steps' outputs
    assert bodies(sink, "/after") == [{"order": 5, "parent_outputs": {"inner": {"y": {"total": 42}}}}]
    assert bodies(sink, "/x") == [{"order": 5}]


async def test_a_failed_child_fails_its_step(flows: Flows) -> None:
    await flows.job("bad", then=Reply(status=400), max_attempts=1)
    await flows.create(step("bad", "bad"), slug="inner")
    await flows.create(child("inner", "inner"), slug="outer")
    done = await flows.wait((await flows.trigger("outer")).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED
    inner = (await flows.steps(done.id))["inner"]
    assert inner.status == R.STEP_RUN_STATUS_FAILED and "step 'bad' failed" in inner.error


async def test_canceling_a_run_cancels_its_whole_tree_at_once(flows: Flows, sink: Sink, database_url: str) -> None:
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    await flows.create(step("hold", "hold"), mapped("many", "hold", "[1, 2, 3, 4]", max_concurrency=2),
                       slug="inner")
    await flows.create(child("inner", "inner"), step("hold", "hold"), slug="middle")
    await flows.create(child("middle", "middle"), slug="outer")
    run = await flows.trigger("outer")
    await eventually(lambda: _received(sink, "/hold", 4))  # inner's step and two instances, middle's step
    await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    conn = await asyncpg.connect(database_url)
    try:
        runs = await conn.fetch("SELECT id, status, depth FROM workflow_runs")
        assert sorted((r["depth"], r["status"]) for r in runs) == [(0, "canceled"), (1, "canceled"), (2, "canceled")]
        open_steps = await conn.fetchval(
            "SELECT count(*) FROM workflow_step_runs WHERE status IN ('pending', 'ready', 'running', 'waiting')")
        open_job_runs = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE status NOT IN ('canceled', 'completed', 'failed')")
        created = await conn.fetchval("SELECT count(*) FROM runs")
    finally:
        await conn.close()
    assert (open_steps, open_job_runs) == (0, 0)
    assert created == 4  # no job run was created after the cancel (the map's other instances never started)


async def _received(sink: Sink, path: str, n: int) -> bool:
    return len(sink.for_path(path)) >= n


async def test_runs_nest_at_most_ten_deep(flows: Flows, settings: Settings) -> None:
    await flows.job("a")
    created = await flows.create(step("a", "a"), slug="again")
    updated = W.Workflow(id=created.id, etag=created.etag, steps=[step("a", "a"), child("deeper", "again")])
    await flows.defs.UpdateWorkflow(W.UpdateWorkflowRequest(workflow=updated, update_mask=FieldMask(paths=["steps"])),
                                    metadata=flows.api.metadata)
    done = await flows.wait((await flows.trigger("again")).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED
    listed = await flows.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(page_size=100), metadata=flows.api.metadata)
    assert len(listed.workflow_runs) == 11  # the run and ten levels of children
    errors = [(await flows.steps(r.id))["deeper"].error for r in listed.workflow_runs]
    # The deepest refused to start another child; each run above failed with its child's error.
    assert sum(e.startswith("sub_workflow_too_deep") for e in errors) == 1
    assert all("sub_workflow_too_deep" in e for e in errors)


async def test_a_map_of_a_sub_workflow_runs_one_child_per_item_in_a_window(flows: Flows, sink: Sink,
                                                                            database_url: str) -> None:
    release = asyncio.Event()
    await flows.job("size", then=Reply(block=release, answer=lambda r: json.dumps({"n": r.json()["file"] * 10})))
    await flows.create(step("size", "size", input_template_json='{"file": "{{ input.file }}"}'), slug="inner")
    files = [3, 1, 2, 5, 4]
    await flows.job("join")
    await flows.create(W.Step(ref="each", sub_workflow=W.SubWorkflowStep(workflow_slug="inner"),
                              map=W.MapSpec(items="input.files", max_concurrency=2),
                              input_template_json='{"file": "{{ item }}"}'),
                       step("join", "join", "each"), slug="outer")
    run = await flows.trigger("outer", run_input={"files": files})
    await eventually(lambda: _received(sink, "/size", 2))
    conn = await asyncpg.connect(database_url)
    try:
        children = await conn.fetch("SELECT status FROM workflow_runs WHERE depth = 1")
    finally:
        await conn.close()
    assert [c["status"] for c in children] == ["running", "running"]  # the window: two children at a time
    release.set()
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    node, *instances = (await flows.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id, step_ref="each"),
                                                      metadata=flows.api.metadata)).step_runs
    assert (node.map_counts.total, node.map_counts.done, node.map_counts.failed) == (5, 5, 0)
    assert all(i.child_workflow_run_id.startswith("wfr_") for i in instances)
    # Each instance's output is its child run's (the child's last steps' outputs), joined in item order.
    assert json.loads(node.output_json) == [{"size": {"n": f * 10}} for f in files]
    [join] = bodies(sink, "/join")
    assert join["parent_outputs"]["each"] == [{"size": {"n": f * 10}} for f in files]
