"""Workflow runs end to end: real server, database, engine loop and HTTP endpoints. Job steps are ordinary
runs; outcomes move the run on by trigger rules, conditions and failure policies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import run_pb2, workflow_pb2, workflow_pb2_grpc, workflow_run_pb2, workflow_run_pb2_grpc
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, eventually
from tests.sink import Reply, Sink

W = workflow_pb2
R = workflow_run_pb2
DONE = {R.WORKFLOW_RUN_STATUS_COMPLETED, R.WORKFLOW_RUN_STATUS_FAILED, R.WORKFLOW_RUN_STATUS_CANCELED,
        R.WORKFLOW_RUN_STATUS_TIMED_OUT}


class Flows:
    def __init__(self, api: Api, sink: Sink) -> None:
        self.api = api
        self.sink = sink
        self.defs = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
        self.runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel)

    async def job(self, slug: str, *replies: Reply, then: Reply | None = None, **fields: Any) -> str:
        await self.api.create_job(slug, self.sink.script(f"/{slug}", *replies, then=then), **fields)
        return slug

    async def create(self, *steps: W.Step, slug: str = "flow") -> W.Workflow:
        return (await self.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(slug=slug, steps=steps)),
                                               metadata=self.api.metadata)).workflow

    async def trigger(self, slug: str = "flow", run_input: dict[str, Any] | None = None,
                      **fields: Any) -> R.WorkflowRun:
        reply = await self.defs.TriggerWorkflow(W.TriggerWorkflowRequest(
            slug=slug, input_json=json.dumps(run_input or {}), **fields), metadata=self.api.metadata)
        return reply.workflow_run

    async def wait(self, run_id: str, timeout: float = 20.0) -> R.WorkflowRun:
        async def done() -> R.WorkflowRun | None:
            run = (await self.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run_id),
                                                  metadata=self.api.metadata)).workflow_run
            return run if run.status in DONE else None
        return await eventually(done, timeout)

    async def steps(self, run_id: str) -> dict[str, R.StepRun]:
        reply = await self.runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run_id), metadata=self.api.metadata)
        return {s.step_ref: s for s in reply.step_runs}

    async def wait_step(self, run_id: str, ref: str, status: int) -> R.StepRun:
        async def check() -> R.StepRun | None:
            found = (await self.steps(run_id)).get(ref)
            return found if found is not None and found.status == status else None
        return await eventually(check)

    async def events(self, run_id: str, after: int = 0) -> list[R.WorkflowRunEvent]:
        reply = await self.runs.ListWorkflowRunEvents(
            R.ListWorkflowRunEventsRequest(workflow_run_id=run_id, after_sequence=after, page_size=1000),
            metadata=self.api.metadata)
        return list(reply.events)


def step(ref: str, job: str, *depends_on: str, **fields: Any) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), job=W.JobStep(job_slug=job), **fields)


def bodies(sink: Sink, path: str) -> list[Any]:
    return [r.json() for r in sink.for_path(path)]


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


async def test_a_chain_passes_outputs_down_and_completes(flows: Flows, sink: Sink) -> None:
    await flows.job("fetch", then=Reply(body='{"order": 7, "total": 12.5}'))
    await flows.job("bill", then=Reply(body='{"receipt": "r-1"}'))
    await flows.job("mail")
    await flows.create(step("fetch", "fetch"), step("bill", "bill", "fetch"),
                       step("mail", "mail", "bill", input_template_json='{"receipt": "{{ steps.bill.output.receipt }}",'
                            ' "total": "{{ steps.fetch.output.total }}", "note": "order {{ input.order_id }}"}'))
    run = await flows.trigger(run_input={"order_id": 7})
    assert run.status == R.WORKFLOW_RUN_STATUS_RUNNING and run.version == 1
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert bodies(sink, "/fetch") == [{"order_id": 7}]
    assert bodies(sink, "/bill") == [{"order_id": 7, "parent_outputs": {"fetch": {"order": 7, "total": 12.5}}}]
    # One template alone keeps the value's type; inside a longer string it is spliced in as text.
    assert bodies(sink, "/mail") == [{"receipt": "r-1", "total": 12.5, "note": "order 7"}]
    steps = await flows.steps(run.id)
    assert list(steps) == ["fetch", "bill", "mail"]  # definition order
    assert {s.status for s in steps.values()} == {R.STEP_RUN_STATUS_COMPLETED}
    assert json.loads(steps["bill"].output_json) == {"receipt": "r-1"}
    job_run = await flows.api.get_run(steps["bill"].job_run_id)  # an ordinary run, linked to its step
    assert job_run.status == run_pb2.RUN_STATUS_COMPLETED
    assert dict(job_run.metadata)["workflow_run_id"] == run.id
    events = await flows.events(run.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert (events[0].type, events[0].to_status) == ("run_status", "running")
    assert (events[-1].type, events[-1].to_status) == ("run_status", "completed")


async def test_fan_out_and_fan_in(flows: Flows, sink: Sink) -> None:
    await flows.job("root")
    await flows.job("leaf")
    await flows.job("join")
    leaves = [step(f"leaf_{i}", "leaf", "root", input_template_json=f'{{"i": {i}}}') for i in range(20)]
    await flows.create(step("root", "root"), *leaves, step("join", "join", *(s.ref for s in leaves)))
    sink.script("/leaf", *[Reply(body=json.dumps({"n": i})) for i in range(20)])
    done = await flows.wait((await flows.trigger()).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    [join_input] = bodies(sink, "/join")
    assert sorted(join_input["parent_outputs"]) == sorted(s.ref for s in leaves)
    assert sorted(o["n"] for o in join_input["parent_outputs"].values()) == list(range(20))
    assert len(sink.for_path("/leaf")) == 20  # one job run per step
    steps = await flows.steps(done.id)
    assert len({s.job_run_id for s in steps.values()}) == 22


async def test_conditions_on_outputs_and_a_join_after_a_skipped_branch(flows: Flows, sink: Sink) -> None:
    await flows.job("risk", then=Reply(body='{"score": 90}'))
    await flows.job("charge")
    await flows.job("review")
    await flows.job("ship")
    await flows.create(
        step("risk", "risk"),
        step("charge", "charge", "risk", condition="steps.risk.output.score < 80"),
        step("review", "review", "risk", condition="steps.risk.output.score >= 80"),
        step("ship", "ship", "charge", "review"))
    done = await flows.wait((await flows.trigger()).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    steps = await flows.steps(done.id)
    assert steps["charge"].status == R.STEP_RUN_STATUS_SKIPPED
    assert steps["charge"].skip_reason == R.SKIP_REASON_CONDITION_FALSE
    assert steps["review"].status == R.STEP_RUN_STATUS_COMPLETED
    assert steps["ship"].status == R.STEP_RUN_STATUS_COMPLETED  # ALL_SUCCESS: a skipped parent is fine
    assert sink.for_path("/charge") == []
    decisions = [e for e in await flows.events(done.id) if e.type == "step_decision"]
    assert [d.step_ref for d in decisions] == ["charge"] and "condition is false" in decisions[0].message


async def test_fail_workflow_cancels_what_is_running(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.job("slow", Reply(block=release))
    await flows.job("bad", then=Reply(status=400, body='{"error": "no"}'))
    await flows.job("after")
    await flows.create(step("slow", "slow"), step("bad", "bad"), step("after", "after", "slow", "bad"))
    run = await flows.trigger()
    done = await flows.wait(run.id)
    release.set()
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED and "step 'bad' failed" in done.error
    steps = await flows.steps(run.id)
    assert steps["bad"].status == R.STEP_RUN_STATUS_FAILED
    assert steps["slow"].status == R.STEP_RUN_STATUS_CANCELED
    assert steps["after"].status == R.STEP_RUN_STATUS_CANCELED
    slow_run = await flows.api.get_run(steps["slow"].job_run_id)
    assert slow_run.status == run_pb2.RUN_STATUS_CANCELED
    assert sink.for_path("/after") == []


async def test_continue_and_ignore_policies_and_cleanup_rules(flows: Flows, sink: Sink) -> None:
    await flows.job("bad", then=Reply(status=400))
    await flows.job("next")
    await flows.job("cleanup")
    await flows.job("alert")
    await flows.create(
        step("bad", "bad", on_failure=W.ON_FAILURE_CONTINUE),
        step("next", "next", "bad"),
        step("cleanup", "cleanup", "bad", trigger_rule=W.TRIGGER_RULE_ALL_DONE),
        step("alert", "alert", "bad", trigger_rule=W.TRIGGER_RULE_ONE_FAILED), slug="cont")
    done = await flows.wait((await flows.trigger("cont")).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED  # a CONTINUE failure still fails the run at the end
    steps = await flows.steps(done.id)
    assert steps["next"].skip_reason == R.SKIP_REASON_UPSTREAM_FAILED
    assert steps["cleanup"].status == R.STEP_RUN_STATUS_COMPLETED
    assert steps["alert"].status == R.STEP_RUN_STATUS_COMPLETED and len(sink.for_path("/alert")) == 1

    await flows.create(step("bad", "bad", on_failure=W.ON_FAILURE_IGNORE), step("next", "next", "bad"),
                       slug="ignore")
    done = await flows.wait((await flows.trigger("ignore")).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    steps = await flows.steps(done.id)
    assert steps["bad"].status == R.STEP_RUN_STATUS_FAILED and steps["bad"].error
    assert steps["next"].status == R.STEP_RUN_STATUS_COMPLETED


async def test_a_template_that_does_not_resolve_fails_the_step(flows: Flows, sink: Sink) -> None:
    await flows.job("a", then=Reply(body='{"x": 1}'))
    await flows.job("b")
    await flows.create(step("a", "a"), step("b", "b", "a", input_template_json='{"y": "{{ steps.a.output.nope }}"}'))
    done = await flows.wait((await flows.trigger()).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED
    steps = await flows.steps(done.id)
    assert steps["b"].status == R.STEP_RUN_STATUS_FAILED and steps["b"].error.startswith("template_error:")
    assert "nope" in steps["b"].error and sink.for_path("/b") == []  # never sent verbatim


async def test_cancel_stops_everything_and_nothing_starts_after(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.job("first", Reply(block=release))
    await flows.job("second")
    await flows.create(step("first", "first"), step("second", "second", "first"))
    run = await flows.trigger()
    await sink.wait_for(1, "/first")
    canceled = (await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id, reason="changed my mind"),
                                                   metadata=flows.api.metadata)).workflow_run
    assert canceled.status == R.WORKFLOW_RUN_STATUS_CANCELED and canceled.error == "changed my mind"
    steps = await flows.steps(run.id)
    assert {s.status for s in steps.values()} == {R.STEP_RUN_STATUS_CANCELED}
    assert (await flows.api.get_run(steps["first"].job_run_id)).status == run_pb2.RUN_STATUS_CANCELED
    release.set()  # the endpoint answers late: the answer is ignored, nothing starts
    await flows.api.wait_status(steps["first"].job_run_id, run_pb2.RUN_STATUS_CANCELED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert sink.for_path("/second") == []
    assert (await flows.steps(run.id))["second"].job_run_id == ""


async def test_runs_keep_the_version_they_started_on(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.job("one", Reply(block=release))
    await flows.job("two")
    await flows.job("three")
    wf = await flows.create(step("one", "one"), step("two", "two", "one"))
    run = await flows.trigger()
    await sink.wait_for(1, "/one")
    await flows.defs.UpdateWorkflow(W.UpdateWorkflowRequest(
        workflow=W.Workflow(id=wf.id, steps=[step("one", "one"), step("three", "three", "one")]),
        update_mask=FieldMask(paths=["steps"])), metadata=flows.api.metadata)
    release.set()
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED and done.version == 1
    assert len(sink.for_path("/two")) == 1 and sink.for_path("/three") == []
    later = await flows.wait((await flows.trigger()).id)
    assert later.version == 2 and len(sink.for_path("/three")) == 1


async def test_trigger_refusals_and_idempotency(flows: Flows) -> None:
    await flows.job("a")
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(
        slug="off", steps=[step("a", "a")], enabled=False)), metadata=flows.api.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.trigger("off")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "disabled" in (err.value.details() or "")
    await flows.create(step("a", "a"), slug="plain")
    for bad in ({"input_json": "[1]"}, {"input_json": "{"}, {"version": -1}):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await flows.defs.TriggerWorkflow(W.TriggerWorkflowRequest(slug="plain", **bad),  # type: ignore[arg-type]
                                             metadata=flows.api.metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = await flows.trigger("plain", idempotency_key="k1")
    again = await flows.defs.TriggerWorkflow(W.TriggerWorkflowRequest(slug="plain", idempotency_key="k1"),
                                             metadata=flows.api.metadata)
    assert again.idempotent_repeat and again.workflow_run.id == first.id
    listed = await flows.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(), metadata=flows.api.metadata)
    assert [r.id for r in listed.workflow_runs] == [first.id]


async def test_watch_gives_the_whole_history_and_ends(flows: Flows, settings: Settings) -> None:
    await flows.job("a")
    await flows.job("b")
    await flows.create(step("a", "a"), step("b", "b", "a"))
    run = await flows.trigger()
    seen: list[R.WorkflowRunEvent] = []
    async for message in flows.runs.WatchWorkflowRun(R.WatchWorkflowRunRequest(workflow_run_id=run.id),
                                                     metadata=flows.api.metadata, timeout=20):
        if message.HasField("event"):
            seen.append(message.event)
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
    assert (seen[-1].type, seen[-1].to_status) == ("run_status", "completed")
    assert [e.sequence for e in await flows.events(run.id)] == [e.sequence for e in seen]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.runs.ListWorkflowRunEvents(R.ListWorkflowRunEventsRequest(workflow_run_id=run.id, page_size=-1),
                                               metadata=flows.api.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    resumed = [m.event async for m in flows.runs.WatchWorkflowRun(
        R.WatchWorkflowRunRequest(workflow_run_id=run.id, after_sequence=3), metadata=flows.api.metadata,
        timeout=20) if m.HasField("event")]
    assert [e.sequence for e in resumed] == [e.sequence for e in seen[3:]]


async def test_the_on_failure_step_runs_once_after_a_failure_with_what_failed(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    await flows.job("bad", then=Reply(status=400), max_attempts=1)
    await flows.job("slow", then=Reply(block=release))
    await flows.job("alert")
    await flows.job("ok")
    definition = W.Workflow(slug="guarded", on_failure_step=step("alert", "alert"),
                            steps=[step("bad", "bad"), step("slow", "slow"), step("after", "ok", "bad")])
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=definition), metadata=flows.api.metadata)
    run = await flows.trigger("guarded", run_input={"order": 1})
    done = await flows.wait(run.id)
    release.set()
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED and done.error.startswith("step 'bad' failed")
    [alert] = bodies(sink, "/alert")
    assert alert == {"order": 1, "failed_step": "bad", "error": "endpoint returned 400"}
    steps = await flows.steps(run.id)
    assert steps["slow"].status == R.STEP_RUN_STATUS_CANCELED  # in flight when the failure came
    assert steps["after"].status == R.STEP_RUN_STATUS_CANCELED and sink.for_path("/ok") == []
    assert steps["alert"].status == R.STEP_RUN_STATUS_COMPLETED
    # Without a failure it never runs; when it fails itself, the run still ends (once).
    await flows.job("fine")
    await flows.job("alert_bad", then=Reply(status=400), max_attempts=1)
    quiet = W.Workflow(slug="quiet", steps=[step("fine", "fine")], on_failure_step=step("alert", "alert"))
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=quiet), metadata=flows.api.metadata)
    calm = await flows.wait((await flows.trigger("quiet")).id)
    assert calm.status == R.WORKFLOW_RUN_STATUS_COMPLETED and "alert" not in await flows.steps(calm.id)
    loud = W.Workflow(slug="loud", steps=[step("bad", "bad")], on_failure_step=step("alert", "alert_bad"))
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=loud), metadata=flows.api.metadata)
    failed = await flows.wait((await flows.trigger("loud")).id)
    assert failed.status == R.WORKFLOW_RUN_STATUS_FAILED and failed.error.startswith("step 'bad' failed")
    assert len(sink.for_path("/alert_bad")) == 1


async def test_output_selector_shapes_a_steps_output(flows: Flows, sink: Sink) -> None:
    await flows.job("fetch", then=Reply(body='{"order": {"id": 7, "lines": [1, 2]}, "noise": true}'))
    await flows.job("use")
    await flows.job("odd", then=Reply(body='{"other": 1}'))
    await flows.create(step("fetch", "fetch", output_selector="result.order.id"), step("use", "use", "fetch"),
                       step("odd", "odd", output_selector="result.order.id", on_failure=W.ON_FAILURE_CONTINUE))
    done = await flows.wait((await flows.trigger()).id)
    steps = await flows.steps(done.id)
    assert json.loads(steps["fetch"].output_json) == 7
    assert bodies(sink, "/use") == [{"parent_outputs": {"fetch": 7}}]
    assert steps["odd"].status == R.STEP_RUN_STATUS_FAILED and steps["odd"].error.startswith("output_selector_error")


async def test_max_parallel_steps_holds_the_others_ready(flows: Flows, sink: Sink) -> None:
    release = asyncio.Event()
    executing = most = 0

    async def work(request: Any) -> None:
        nonlocal executing, most
        executing += 1
        most = max(most, executing)
        await release.wait()
        executing -= 1

    await flows.api.create_job("work", sink.script("/work", then=Reply(action=work)))
    definition = W.Workflow(slug="narrow", max_parallel_steps=2,
                            steps=[step(f"s{i}", "work") for i in range(5)])
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=definition), metadata=flows.api.metadata)
    run = await flows.trigger("narrow")
    await eventually(lambda: _received(sink, "/work", 2))
    steps = await flows.steps(run.id)
    assert sorted(s.status for s in steps.values()) == [R.STEP_RUN_STATUS_READY] * 3 + [R.STEP_RUN_STATUS_RUNNING] * 2
    release.set()
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert most == 2 and len(sink.for_path("/work")) == 5


async def _received(sink: Sink, path: str, n: int) -> bool:
    return len(sink.for_path(path)) >= n


async def test_workflow_metrics_count_runs_and_time_steps(app: App, flows: Flows, sink: Sink) -> None:
    registry = app.telemetry.metrics.registry
    await flows.job("slow", then=Reply(delay=0.05))
    await flows.create(step("slow", "slow"))
    done = await flows.wait((await flows.trigger()).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert registry.get_sample_value("strait_workflow_runs_started_total") == 1
    assert registry.get_sample_value("strait_workflow_runs_ended_total", {"status": "completed"}) == 1
    labels = {"kind": "job", "status": "completed"}
    assert registry.get_sample_value("strait_workflow_step_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("strait_workflow_step_duration_seconds_sum", labels) >= 0.05


async def test_steps_with_one_concurrency_key_run_one_at_a_time(flows: Flows, sink: Sink) -> None:
    executing = most = 0

    async def work(request: Any) -> None:
        nonlocal executing, most
        executing += 1
        most = max(most, executing)
        await asyncio.sleep(0.02)  # the work takes a while: another keyed step would start meanwhile if it could
        executing -= 1

    await flows.api.create_job("keyed", sink.script("/keyed", then=Reply(action=work)))
    await flows.job("free")
    keyed = [step(f"k{i}", "keyed", concurrency_key="input.db") for i in range(3)]
    await flows.create(*keyed, step("free", "free"))
    run = await flows.trigger(run_input={"db": "orders"})
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert most == 1 and len(sink.for_path("/keyed")) == 3
    held = [e.step_ref for e in await flows.events(run.id) if e.type == "step_status" and e.to_status == "ready"]
    assert sorted(held) == ["k1", "k2"]  # the unkeyed step did not wait
