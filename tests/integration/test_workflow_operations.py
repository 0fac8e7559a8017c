"""Operating workflow runs: pause and resume, and the run's graph."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from strait_client.v1 import workflow_pb2, workflow_run_pb2
from tests.conftest import Api, eventually
from tests.integration.test_workflow_runs import Flows, step
from tests.integration.test_workflow_waits import approval, rpc_error
from tests.sink import Reply, Sink

W = workflow_pb2
R = workflow_run_pb2


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


async def graph(flows: Flows, run_id: str) -> R.WorkflowRunGraph:
    return (await flows.runs.GetWorkflowRunGraph(R.GetWorkflowRunGraphRequest(id=run_id),
                                                 metadata=flows.api.metadata)).graph


async def test_a_paused_run_finishes_what_runs_and_starts_nothing_until_resumed(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.job("first", then=Reply(block=release))
    await flows.job("second")
    await flows.job("third")
    await flows.create(step("first", "first"), step("second", "second", "first"), step("third", "third", "first"))
    run = await flows.trigger()
    await eventually(lambda: _received(sink, "/first"))
    paused = await flows.runs.PauseWorkflowRun(R.PauseWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    assert paused.workflow_run.status == R.WORKFLOW_RUN_STATUS_PAUSED
    release.set()

    async def first_done() -> R.WorkflowRunGraph | None:
        g = await graph(flows, run.id)
        return g if set(g.ready) == {"second", "third"} else None
    held = await eventually(first_done)
    assert {n.step_ref: n.status for n in held.nodes} == {
        "first": R.STEP_RUN_STATUS_COMPLETED, "second": R.STEP_RUN_STATUS_READY, "third": R.STEP_RUN_STATUS_READY}
    assert sink.for_path("/second") == [] and sink.for_path("/third") == []  # nothing started while paused
    again = await rpc_error(flows.runs.PauseWorkflowRun(R.PauseWorkflowRunRequest(id=run.id),
                                                        metadata=flows.api.metadata))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    resumed = await flows.runs.ResumeWorkflowRun(R.ResumeWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    assert resumed.workflow_run.status == R.WORKFLOW_RUN_STATUS_RUNNING
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert len(sink.for_path("/second")) == 1 and len(sink.for_path("/third")) == 1
    changes = [(e.from_status, e.to_status) for e in await flows.events(run.id) if e.type == "run_status"]
    assert changes == [("", "running"), ("running", "paused"), ("paused", "running"), ("running", "completed")]
    ended = await rpc_error(flows.runs.ResumeWorkflowRun(R.ResumeWorkflowRunRequest(id=run.id),
                                                         metadata=flows.api.metadata))
    assert ended.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _received(sink: Sink, path: str) -> bool:
    return bool(sink.for_path(path))


async def test_resume_needs_a_paused_run_and_cancel_ends_a_paused_one(flows: Flows) -> None:
    await flows.job("after")
    await flows.create(approval("gate"), step("after", "after", "gate"))
    run = await flows.trigger()
    err = await rpc_error(flows.runs.ResumeWorkflowRun(R.ResumeWorkflowRunRequest(id=run.id),
                                                       metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    await flows.runs.PauseWorkflowRun(R.PauseWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    # Decisions still count while paused; what they make ready waits.
    await flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="gate"), metadata=flows.api.metadata)
    assert list((await graph(flows, run.id)).ready) == ["after"]
    canceled = await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    assert canceled.workflow_run.status == R.WORKFLOW_RUN_STATUS_CANCELED
    assert (await flows.steps(run.id))["after"].status == R.STEP_RUN_STATUS_CANCELED
    missing = await rpc_error(flows.runs.PauseWorkflowRun(R.PauseWorkflowRunRequest(id="wfr_nope"),
                                                          metadata=flows.api.metadata))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_the_graph_shows_steps_kinds_and_edges(flows: Flows) -> None:
    await flows.job("a")
    await flows.create(step("a", "a"), approval("b", "a"), W.Step(ref="c", depends_on=["a", "b"],
                                                                   sleep=W.SleepStep(until_template="{{ input.t }}")))
    run = await flows.trigger(run_input={"t": "2020-01-01T00:00:00Z"})

    async def waiting() -> R.WorkflowRunGraph | None:
        g = await graph(flows, run.id)
        return g if g.nodes[1].status == R.STEP_RUN_STATUS_WAITING else None
    g = await eventually(waiting)
    assert [(n.step_ref, n.kind) for n in g.nodes] == [("a", "job"), ("b", "approval"), ("c", "sleep")]
    assert g.nodes[0].status == R.STEP_RUN_STATUS_COMPLETED and g.nodes[0].job_run_id.startswith("run_")
    assert g.nodes[1].waiting_reason == "approval" and g.nodes[2].status == R.STEP_RUN_STATUS_PENDING
    assert {(e.parent, e.child) for e in g.edges} == {("a", "b"), ("a", "c"), ("b", "c")}
    assert list(g.roots) == ["a"] and g.version == 1 and g.status == R.WORKFLOW_RUN_STATUS_RUNNING
    err = await rpc_error(flows.runs.GetWorkflowRunGraph(R.GetWorkflowRunGraphRequest(id="wfr_nope"),
                                                         metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_failed_step_retried_reopens_the_run_and_it_completes(flows: Flows, sink: Sink) -> None:
    await flows.job("a")
    await flows.job("b", max_attempts=1)
    await flows.job("c")
    release = asyncio.Event()
    await flows.job("d", then=Reply(block=release))
    sink.script("/b", Reply(status=500))  # fails once, then answers 200
    await flows.create(step("a", "a"), step("b", "b", "a"), step("c", "c", "b"), step("d", "d", "a"))
    run = await flows.trigger()
    failed = await flows.wait(run.id)
    assert failed.status == R.WORKFLOW_RUN_STATUS_FAILED
    before = await flows.steps(run.id)
    assert before["d"].status == R.STEP_RUN_STATUS_CANCELED  # canceled because b failed
    # From now d answers at once (its canceled run's request too, whenever it arrives: that answer is ignored).
    release.set()
    reopened = await flows.runs.RetryWorkflowStep(R.RetryWorkflowStepRequest(id=run.id, step_ref="b"),
                                                  metadata=flows.api.metadata)
    assert reopened.workflow_run.status == R.WORKFLOW_RUN_STATUS_RUNNING and not reopened.workflow_run.error
    done = await flows.wait(run.id)
    after = await flows.steps(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, (
        done.error, {r: (s.status, s.error) for r, s in after.items()},
        [(e.type, e.step_ref, e.to_status, e.message) for e in await flows.events(run.id)])
    assert {s.status for s in after.values()} == {R.STEP_RUN_STATUS_COMPLETED}
    assert after["b"].job_run_id != before["b"].job_run_id and after["a"].job_run_id == before["a"].job_run_id
    assert (len(sink.for_path("/a")), len(sink.for_path("/b")), len(sink.for_path("/c"))) == (1, 2, 1)
    changes = [(e.from_status, e.to_status) for e in await flows.events(run.id) if e.type == "run_status"]
    assert changes == [("", "running"), ("running", "failed"), ("failed", "running"), ("running", "completed")]


async def test_a_replayed_subtree_runs_again_and_other_branches_keep_theirs(flows: Flows, sink: Sink) -> None:
    for slug in ("a", "b", "c", "d"):
        await flows.job(slug)
    sink.script("/a", Reply(body='{"v": 1}'))
    await flows.create(step("a", "a"), step("b", "b", "a"), step("c", "c", "b"), step("d", "d", "a"))
    run = await flows.trigger()
    await flows.wait(run.id)
    before = await flows.steps(run.id)
    reply = await flows.runs.ReplayWorkflowSubtree(R.ReplayWorkflowSubtreeRequest(id=run.id, step_ref="b"),
                                                   metadata=flows.api.metadata)
    assert reply.workflow_run.status == R.WORKFLOW_RUN_STATUS_RUNNING
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    after = await flows.steps(run.id)
    assert [len(sink.for_path(f"/{s}")) for s in "abcd"] == [1, 2, 2, 1]
    assert after["d"].job_run_id == before["d"].job_run_id and after["c"].job_run_id != before["c"].job_run_id
    assert [r.json() for r in sink.for_path("/b")] == [{"parent_outputs": {"a": {"v": 1}}}] * 2  # a's output kept


async def test_retry_and_replay_refuse_steps_and_runs_in_the_wrong_state(flows: Flows) -> None:
    await flows.job("a")
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    await flows.create(step("a", "a"), step("hold", "hold", "a"))
    run = await flows.trigger()

    async def running() -> bool:
        return (await flows.steps(run.id))["hold"].status == R.STEP_RUN_STATUS_RUNNING
    await eventually(running)
    cases = [
        (flows.runs.RetryWorkflowStep(R.RetryWorkflowStepRequest(id=run.id, step_ref="a"),
                                      metadata=flows.api.metadata), grpc.StatusCode.FAILED_PRECONDITION),  # completed
        (flows.runs.ReplayWorkflowSubtree(R.ReplayWorkflowSubtreeRequest(id=run.id, step_ref="hold"),
                                          metadata=flows.api.metadata), grpc.StatusCode.FAILED_PRECONDITION),
        (flows.runs.RetryWorkflowStep(R.RetryWorkflowStepRequest(id=run.id, step_ref="nope"),
                                      metadata=flows.api.metadata), grpc.StatusCode.NOT_FOUND),
        (flows.runs.RetryWorkflowStep(R.RetryWorkflowStepRequest(id="wfr_nope", step_ref="a"),
                                      metadata=flows.api.metadata), grpc.StatusCode.NOT_FOUND),
    ]
    for call, code in cases:
        assert (await rpc_error(call)).code() == code
    await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    err = await rpc_error(flows.runs.ReplayWorkflowSubtree(R.ReplayWorkflowSubtreeRequest(id=run.id, step_ref="a"),
                                                           metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # a canceled run stays canceled
