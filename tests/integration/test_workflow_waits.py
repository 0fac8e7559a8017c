"""Steps that wait, end to end: approvals (ApproveStep, RejectStep, approvers, timeouts), events (SendEvent,
keys from templates, match, look-back, idempotency), sleeps, and steps completed or skipped by hand."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from strait_client.v1 import (
    event_pb2,
    event_pb2_grpc,
    project_pb2,
    run_pb2,
    workflow_pb2,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.integration.test_workflow_runs import Flows, bodies, step
from tests.sink import Reply, Sink
from tests.support import FakeClock

W = workflow_pb2
R = workflow_run_pb2


def seconds(n: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=n))
    return d


_KIND_FIELDS = {"approvers", "timeout", "lookback", "match"}


def approval(ref: str, *depends_on: str, **fields: Any) -> W.Step:
    spec = {k: v for k, v in fields.items() if k in _KIND_FIELDS}
    rest = {k: v for k, v in fields.items() if k not in _KIND_FIELDS}
    return W.Step(ref=ref, depends_on=list(depends_on), approval=W.ApprovalStep(**spec), **rest)


def wait_for(ref: str, key: str, *depends_on: str, **fields: Any) -> W.Step:
    spec = {k: v for k, v in fields.items() if k in _KIND_FIELDS}
    rest = {k: v for k, v in fields.items() if k not in _KIND_FIELDS}
    return W.Step(ref=ref, depends_on=list(depends_on),
                  wait_for_event=W.WaitForEventStep(event_key_template=key, **spec), **rest)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


@pytest.fixture
def events(api: Api) -> event_pb2_grpc.EventServiceStub:
    return event_pb2_grpc.EventServiceStub(api.channel)


async def waiting(flows: Flows, run_id: str, ref: str) -> R.StepRun:
    async def check() -> R.StepRun | None:
        found = (await flows.steps(run_id))[ref]
        return found if found.status == R.STEP_RUN_STATUS_WAITING else None
    return await eventually(check)


async def send(api: Api, events: event_pb2_grpc.EventServiceStub, key: str, payload: Any = None,
               **fields: Any) -> event_pb2.SendEventResponse:
    return await events.SendEvent(event_pb2.SendEventRequest(key=key, payload_json=json.dumps(payload), **fields),
                                  metadata=api.metadata)


async def test_an_approved_step_completes_with_the_decision_and_the_run_goes_on(flows: Flows, sink: Sink) -> None:
    await flows.job("ship")
    await flows.create(approval("review"), step("ship", "ship", "review"))
    run = await flows.trigger(run_input={"order": 3})
    review = await waiting(flows, run.id, "review")
    assert review.waiting_reason == "approval" and not review.HasField("wake_time")  # no timeout: never expires
    assert sink.for_path("/ship") == []
    reply = await flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="review", comment="looks fine"),
                                         metadata=flows.api.metadata)
    assert reply.step_run.status == R.STEP_RUN_STATUS_COMPLETED
    decision = json.loads(reply.step_run.output_json)
    assert (decision["approver"], decision["comment"]) == ("test", "looks fine")  # the key's name
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    [shipped] = bodies(sink, "/ship")
    assert shipped["order"] == 3 and shipped["parent_outputs"]["review"]["comment"] == "looks fine"
    messages = [e.message for e in await flows.events(run.id)]
    assert "approval" in messages and "approved by test: looks fine" in messages


async def test_a_rejected_step_fails_and_its_policy_applies(flows: Flows, sink: Sink) -> None:
    await flows.job("ship")
    await flows.job("cleanup")
    await flows.create(approval("review"), step("ship", "ship", "review"))
    run = await flows.trigger()
    await waiting(flows, run.id, "review")
    reply = await flows.runs.RejectStep(R.RejectStepRequest(id=run.id, step_ref="review", reason="too risky"),
                                        metadata=flows.api.metadata)
    assert reply.step_run.status == R.STEP_RUN_STATUS_FAILED and reply.step_run.error == "rejected by test: too risky"
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED and "too risky" in done.error
    assert sink.for_path("/ship") == []
    # With CONTINUE, the rejection is an outcome the rest of the run decides on.
    await flows.create(approval("review", on_failure=W.ON_FAILURE_CONTINUE), step("ship", "ship", "review"),
                       step("cleanup", "cleanup", "review", trigger_rule=W.TRIGGER_RULE_ALL_DONE), slug="lenient")
    run = await flows.trigger("lenient")
    await waiting(flows, run.id, "review")
    await flows.runs.RejectStep(R.RejectStepRequest(id=run.id, step_ref="review"), metadata=flows.api.metadata)
    done = await flows.wait(run.id)
    steps = await flows.steps(run.id)
    assert steps["ship"].skip_reason == R.SKIP_REASON_UPSTREAM_FAILED
    assert steps["cleanup"].status == R.STEP_RUN_STATUS_COMPLETED and len(sink.for_path("/cleanup")) == 1


async def test_only_the_named_approvers_may_decide(app: App, flows: Flows, settings: Settings) -> None:
    lead = await flows.api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(name="lead"),
                                                 metadata=flows.api.metadata)
    await flows.create(approval("review", approvers=["lead"]))
    run = await flows.trigger()
    await waiting(flows, run.id, "review")
    err = await rpc_error(flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="review"),
                                                 metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await flows.steps(run.id))["review"].status == R.STEP_RUN_STATUS_WAITING  # nothing changed
    as_lead = (("authorization", f"Bearer {lead.secret}"),)
    reply = await flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="review"), metadata=as_lead)
    assert json.loads(reply.step_run.output_json)["approver_key_id"] == lead.api_key.id
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED


async def test_operations_on_the_wrong_step_are_refused_and_change_nothing(flows: Flows, settings: Settings,
                                                                           app: App) -> None:
    await flows.job("slow", then=Reply(block=asyncio.Event()))
    await flows.create(step("work", "slow"), approval("review", "work"))
    run = await flows.trigger()
    before = await flows.steps(run.id)
    cases = [
        (R.ApproveStepRequest(id=run.id, step_ref="review"), grpc.StatusCode.FAILED_PRECONDITION),  # pending
        (R.ApproveStepRequest(id=run.id, step_ref="work"), grpc.StatusCode.FAILED_PRECONDITION),  # a job step
        (R.ApproveStepRequest(id=run.id, step_ref="nope"), grpc.StatusCode.NOT_FOUND),
        (R.ApproveStepRequest(id="wfr_missing", step_ref="review"), grpc.StatusCode.NOT_FOUND),
        (R.ApproveStepRequest(id=run.id, step_ref="Not-A-Ref"), grpc.StatusCode.INVALID_ARGUMENT),
        (R.ApproveStepRequest(id=run.id, step_ref=""), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, code in cases:
        assert (await rpc_error(flows.runs.ApproveStep(request, metadata=flows.api.metadata))).code() == code
    bad_output = R.CompleteWorkflowStepRequest(id=run.id, step_ref="work", output_json="{")
    err = await rpc_error(flows.runs.CompleteWorkflowStep(bad_output, metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = await connect(app, settings.admin_key)  # another project cannot see the run
    stub = workflow_run_pb2_grpc.WorkflowRunServiceStub(other.channel)
    err = await rpc_error(stub.SkipWorkflowStep(R.SkipWorkflowStepRequest(id=run.id, step_ref="work"),
                                                metadata=other.metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    await other.channel.close()
    after = await flows.steps(run.id)
    assert {r: s.status for r, s in after.items()} == {r: s.status for r, s in before.items()}
    await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=flows.api.metadata)
    err = await rpc_error(flows.runs.SkipWorkflowStep(R.SkipWorkflowStepRequest(id=run.id, step_ref="review"),
                                                      metadata=flows.api.metadata))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # the run ended


async def test_timers_time_out_approvals_and_waits_but_an_approval_without_timeout_never_expires(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    clock = FakeClock()
    app = await make_app(clock=clock)
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    await flows.create(approval("forever"), approval("hour", timeout=seconds(3600), on_failure=W.ON_FAILURE_CONTINUE),
                       wait_for("paid", "paid-{{ input.order }}", timeout=seconds(3600),
                                on_failure=W.ON_FAILURE_CONTINUE))
    run = await flows.trigger(run_input={"order": 9})
    for ref in ("forever", "hour", "paid"):
        await waiting(flows, run.id, ref)
    assert app.workflow_progress is not None
    clock.now = datetime.now(UTC) + timedelta(hours=2)
    await app.workflow_progress.run_pass()
    steps = await flows.steps(run.id)
    assert steps["forever"].status == R.STEP_RUN_STATUS_WAITING
    assert steps["hour"].status == R.STEP_RUN_STATUS_FAILED and steps["hour"].error.startswith("approval_timed_out")
    assert steps["paid"].status == R.STEP_RUN_STATUS_FAILED and steps["paid"].error.startswith("event_wait_timed_out")
    assert steps["paid"].waiting_reason == "event:paid-9"
    await flows.runs.ApproveStep(R.ApproveStepRequest(id=run.id, step_ref="forever"), metadata=api.metadata)
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED  # two steps failed (CONTINUE: the others went on)
    await api.channel.close()


async def test_a_sleep_ends_when_due_and_never_before(flows: Flows, sink: Sink) -> None:
    await flows.job("after")
    await flows.create(W.Step(ref="nap", sleep=W.SleepStep(duration=seconds(1))), step("after", "after", "nap"),
                       W.Step(ref="past", sleep=W.SleepStep(until_template="{{ input.at }}")))
    run = await flows.trigger(run_input={"at": "2020-01-01T00:00:00Z"})
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    steps = await flows.steps(run.id)
    nap = steps["nap"]
    assert nap.wake_time.ToDatetime() - nap.start_time.ToDatetime() == timedelta(seconds=1)
    assert nap.finish_time.ToDatetime() >= nap.wake_time.ToDatetime()
    assert steps["past"].status == R.STEP_RUN_STATUS_COMPLETED
    assert len(sink.for_path("/after")) == 1
    await flows.create(W.Step(ref="bad", sleep=W.SleepStep(until_template="{{ input.at }}")), slug="bad-time")
    failed = await flows.wait((await flows.trigger("bad-time", run_input={"at": "tomorrow"})).id)
    assert (await flows.steps(failed.id))["bad"].error.startswith("template_error")


async def test_an_event_resolves_the_steps_waiting_for_its_key(flows: Flows, sink: Sink, api: Api,
                                                                events: event_pb2_grpc.EventServiceStub) -> None:
    await flows.job("ship")
    await flows.create(wait_for("paid", "order-{{ input.order }}-paid", match="payload.amount >= 10"),
                       step("ship", "ship", "paid"))
    run = await flows.trigger(run_input={"order": 5})
    other = await flows.trigger(run_input={"order": 6})
    paid = await waiting(flows, run.id, "paid")
    assert paid.waiting_reason == "event:order-5-paid"
    assert (await send(api, events, "order-5-paid", {"amount": 3})).matched_steps == 0  # the match refuses it
    assert (await send(api, events, "order-5-paid", {"note": "no amount"})).matched_steps == 0
    sent = await send(api, events, "order-5-paid", {"amount": 12})
    assert sent.matched_steps == 1 and sent.event.id.startswith("evt_") and sent.event.key == "order-5-paid"
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert json.loads((await flows.steps(run.id))["paid"].output_json) == {"amount": 12}
    assert bodies(sink, "/ship")[0]["parent_outputs"]["paid"] == {"amount": 12}
    assert (await send(api, events, "order-5-paid", {"amount": 12})).matched_steps == 0  # resolved already
    assert (await flows.steps(other.id))["paid"].status == R.STEP_RUN_STATUS_WAITING  # another key


async def test_a_wait_looks_back_only_as_far_as_it_says(flows: Flows, api: Api,
                                                         events: event_pb2_grpc.EventServiceStub) -> None:
    await send(api, events, "ready", {"v": 1})
    await flows.create(wait_for("seen", "ready", lookback=seconds(60)), wait_for("blind", "ready"))
    run = await flows.trigger()
    await waiting(flows, run.id, "blind")
    steps = await flows.steps(run.id)
    assert steps["seen"].status == R.STEP_RUN_STATUS_COMPLETED and json.loads(steps["seen"].output_json) == {"v": 1}
    assert (await send(api, events, "ready", {"v": 2})).matched_steps == 1
    await flows.wait(run.id)
    assert json.loads((await flows.steps(run.id))["blind"].output_json) == {"v": 2}


async def test_a_repeated_event_is_sent_once(flows: Flows, api: Api, events: event_pb2_grpc.EventServiceStub) -> None:
    await flows.create(wait_for("a", "k"), wait_for("b", "k", "a"))
    run = await flows.trigger()
    await waiting(flows, run.id, "a")
    first = await send(api, events, "k", 1, idempotency_key="once")
    await waiting(flows, run.id, "b")
    again = await send(api, events, "k", 2, idempotency_key="once")
    assert again.idempotent_repeat and again.event.id == first.event.id and again.matched_steps == 0
    assert json.loads(again.event.payload_json) == 1
    assert (await flows.steps(run.id))["b"].status == R.STEP_RUN_STATUS_WAITING


async def test_send_event_refuses_bad_input(api: Api, events: event_pb2_grpc.EventServiceStub) -> None:
    for request in (event_pb2.SendEventRequest(key=""), event_pb2.SendEventRequest(key="k", payload_json="{"),
                    event_pb2.SendEventRequest(key="x" * 1025)):
        err = await rpc_error(events.SendEvent(request, metadata=api.metadata))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_steps_completed_or_skipped_by_hand(flows: Flows, sink: Sink, api: Api) -> None:
    await flows.job("slow", then=Reply(block=asyncio.Event()))
    await flows.job("use")
    await flows.create(step("slow", "slow"), step("use", "use", "slow"), approval("gate"),
                       step("after_gate", "use", "gate", trigger_rule=W.TRIGGER_RULE_NONE_FAILED))
    run = await flows.trigger()
    await eventually(lambda: _started(sink, "/slow"))
    await waiting(flows, run.id, "gate")
    done_by_hand = await flows.runs.CompleteWorkflowStep(
        R.CompleteWorkflowStepRequest(id=run.id, step_ref="slow", output_json='{"fixed": true}'), metadata=api.metadata)
    assert done_by_hand.step_run.status == R.STEP_RUN_STATUS_COMPLETED
    skipped = await flows.runs.SkipWorkflowStep(R.SkipWorkflowStepRequest(id=run.id, step_ref="gate", reason="n/a"),
                                                metadata=api.metadata)
    assert skipped.step_run.skip_reason == R.SKIP_REASON_MANUAL
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    steps = await flows.steps(run.id)
    job_run = await api.get_run(steps["slow"].job_run_id)
    assert job_run.status == run_pb2.RUN_STATUS_CANCELED  # its job run stopped
    uses = bodies(sink, "/use")
    # after_gate ran (none of its parents failed), with the skipped gate's output null.
    assert sorted(uses, key=json.dumps) == [{"parent_outputs": {"gate": None}},
                                            {"parent_outputs": {"slow": {"fixed": True}}}]
    assert steps["after_gate"].status == R.STEP_RUN_STATUS_COMPLETED


async def _started(sink: Sink, path: str) -> bool:
    return bool(sink.for_path(path))


async def test_canceling_a_run_ends_its_waits(flows: Flows, api: Api, events: event_pb2_grpc.EventServiceStub) -> None:
    await flows.create(wait_for("w", "go"), approval("a"))
    run = await flows.trigger()
    await waiting(flows, run.id, "w")
    await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id), metadata=api.metadata)
    steps = await flows.steps(run.id)
    assert {s.status for s in steps.values()} == {R.STEP_RUN_STATUS_CANCELED}
    assert (await send(api, events, "go")).matched_steps == 0


async def test_a_run_past_its_workflows_timeout_ends_timed_out(make_app: AppFactory, settings: Settings,
                                                              sink: Sink) -> None:
    clock = FakeClock()
    app = await make_app(clock=clock)
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    await flows.job("hold", then=Reply(block=asyncio.Event()))
    definition = W.Workflow(slug="bounded", timeout=seconds(3600), steps=[step("hold", "hold"), approval("gate")])
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=definition), metadata=api.metadata)
    run = await flows.trigger("bounded")
    assert run.HasField("deadline_time")
    assert run.deadline_time.ToDatetime() - run.start_time.ToDatetime() == timedelta(hours=1)
    await eventually(lambda: _received(sink, "/hold"))
    assert app.workflow_progress is not None
    await app.workflow_progress.run_pass()  # not due yet
    assert (await flows.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run.id), metadata=api.metadata)
            ).workflow_run.status == R.WORKFLOW_RUN_STATUS_RUNNING
    clock.now = datetime.now(UTC) + timedelta(hours=2)
    await app.workflow_progress.run_pass()
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_TIMED_OUT and "timeout" in done.error
    steps = await flows.steps(run.id)
    assert {s.status for s in steps.values()} == {R.STEP_RUN_STATUS_CANCELED}
    assert (await api.get_run(steps["hold"].job_run_id)).status == run_pb2.RUN_STATUS_CANCELED
    await api.channel.close()


async def _received(sink: Sink, path: str) -> bool:
    return bool(sink.for_path(path))
