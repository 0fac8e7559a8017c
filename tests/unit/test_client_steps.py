"""Workflow steps as the client builds and reads them: every Step written reads back equal, oneofs pick the
member that is set, and input_template is a decoded JSON value or JSON text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from strait_client import (
    ApprovalStep,
    ConcurrencyStrategy,
    JobStep,
    MapSpec,
    OnFailure,
    RetryStrategy,
    SleepStep,
    Step,
    StepRetryPolicy,
    SubWorkflowStep,
    TriggerRule,
    WaitForEventStep,
    Workflow,
    WorkflowConcurrency,
)
from strait_client._convert import fill
from strait_client._ops import create_workflow, update_workflow, validate_workflow
from strait_client.v1 import workflow_pb2 as W

EVERY_KIND = [
    Step("a", job=JobStep(job_slug="charge"), map=MapSpec("input.items", 10, 2, 1, 12.5),
         retry_policy=StepRetryPolicy(3, RetryStrategy.FIXED, timedelta(seconds=1), timedelta(minutes=1)),
         timeout=timedelta(seconds=30), schedule_to_start_timeout=timedelta(hours=1), output_selector="result.x",
         concurrency_key="input.customer", on_failure=OnFailure.CONTINUE),
    Step("b", ["a"], TriggerRule.ALL_DONE, "steps.a.output.ok", job=JobStep(job_id="job_1")),
    Step("c", approval=ApprovalStep(["ops"], timedelta(days=1))),
    Step("d", approval=ApprovalStep()),
    Step("e", wait_for_event=WaitForEventStep("order-{{ input.id }}", timedelta(hours=2), timedelta(0), "event.ok")),
    Step("f", sleep=SleepStep(timedelta(minutes=5))),
    Step("g", sleep=SleepStep(until_template="{{ input.at }}")),
    Step("h", sub_workflow=SubWorkflowStep(workflow_slug="child", version=2)),
    Step("i", sub_workflow=SubWorkflowStep(workflow_id="wf_1")),
    Step("j", job=JobStep(job_slug="x"), input_template={"amount": "{{ input.amount }}", "n": [1, None]}),
    Step("k", job=JobStep(job_slug="x"), input_template='{"raw": "{{ input }}"}'),
    Step("l", job=JobStep(job_slug="x"), input_template='"{{ input.amount }}"'),
]


@pytest.mark.parametrize("step", EVERY_KIND, ids=lambda s: s.ref)
def test_a_step_reads_back_as_written(step: Step) -> None:
    message = step.to_proto()
    assert message.WhichOneof("kind") == step.kind
    back = Step.from_proto(message)
    if isinstance(step.input_template, str) and not step.input_template.startswith('"'):
        assert back.input_template == {"raw": "{{ input }}"}  # JSON text of an object reads back decoded
    else:
        assert back == step
    # Through the JSON the server stores, too.
    assert Step.from_proto(json_format.ParseDict(json_format.MessageToDict(message), W.Step())) == back


def test_oneofs_pick_the_member_that_is_set() -> None:
    assert Step("a", job=JobStep(job_id="job_1")).to_proto().job.WhichOneof("job") == "job_id"
    assert SleepStep(timedelta(seconds=5)).to_proto().WhichOneof("until") == "duration"
    assert SubWorkflowStep(workflow_id="wf_1").to_proto().WhichOneof("workflow") == "workflow_id"
    # An empty kind is still the step's kind, from a dataclass or a dict.
    assert Step("a", approval=ApprovalStep()).to_proto().WhichOneof("kind") == "approval"
    assert fill(W.Step(), {"ref": "a", "approval": {}}).WhichOneof("kind") == "approval"
    assert Step("a").kind is None and Step("a", sleep=SleepStep()).kind == "sleep"


def test_input_template_is_a_value_or_json_text() -> None:
    assert Step("a", input_template={"x": 1}).to_proto().input_template_json == '{"x":1}'
    assert Step("a", input_template=[1, 2]).to_proto().input_template_json == "[1,2]"
    assert Step("a", input_template=0).to_proto().input_template_json == "0"
    assert Step("a", input_template='{"x": 1}').to_proto().input_template_json == '{"x": 1}'  # sent as is
    assert Step("a").to_proto().input_template_json == ""
    assert Step.from_proto(W.Step(input_template_json='{"x": 1}')).input_template == {"x": 1}
    assert Step.from_proto(W.Step(input_template_json="null")).input_template == "null"
    assert Step.from_proto(W.Step()).input_template is None
    with pytest.raises(ValueError, match="input_template"):
        Step("a", input_template={"x": float("nan")}).to_proto()


def test_lists_are_kept_as_tuples_and_a_str_is_refused() -> None:
    step = Step("b", ["a"], approval=ApprovalStep(["ops", "finance"]))
    assert step.depends_on == ("a",) and step.approval is not None and step.approval.approvers == ("ops", "finance")
    assert step == Step("b", ("a",), approval=ApprovalStep(("ops", "finance")))
    with pytest.raises(TypeError, match="depends_on"):
        Step("b", "a")
    with pytest.raises(TypeError, match="approvers"):
        ApprovalStep("ops")


def test_enums_are_lower_case_names() -> None:
    assert TriggerRule.ALL_SUCCESS == "all_success" and OnFailure.FAIL_WORKFLOW == "fail_workflow"
    assert ConcurrencyStrategy.CANCEL_IN_PROGRESS == "cancel_in_progress"
    assert Step("a", trigger_rule="one_failed").to_proto().trigger_rule == W.TRIGGER_RULE_ONE_FAILED  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a TriggerRule"):
        Step("a", trigger_rule="sometimes").to_proto()  # type: ignore[arg-type]
    step = Step.from_proto(W.Step(ref="a", trigger_rule=99, on_failure=W.ON_FAILURE_IGNORE))
    assert step.trigger_rule is None and step.on_failure is OnFailure.IGNORE  # 99: a newer server's rule


def test_a_workflow_is_decoded() -> None:
    message = W.Workflow(id="wf_1", slug="orders", version=2, steps=[EVERY_KIND[1].to_proto()],
                         on_failure_step=W.Step(ref="alert", job=W.JobStep(job_slug="pager")),
                         concurrency=W.WorkflowConcurrency(max_runs=1, strategy=W.CONCURRENCY_STRATEGY_CANCEL_NEWEST),
                         timeout=Duration(seconds=3600), tags={"team": "a"})
    wf = Workflow.from_proto(message)
    assert wf.steps == (EVERY_KIND[1],) and isinstance(wf.steps, tuple)
    assert wf.on_failure_step == Step("alert", job=JobStep(job_slug="pager"))
    assert wf.concurrency == WorkflowConcurrency(1, "", ConcurrencyStrategy.CANCEL_NEWEST)
    assert wf.timeout == timedelta(hours=1) and wf.enabled is True and wf.create_time is None
    bare = Workflow.from_proto(W.Workflow(enabled=False))
    assert bare.on_failure_step is None and bare.concurrency is None and bare.enabled is False


def test_requests() -> None:
    request = create_workflow("w", [Step("a", job=JobStep(job_slug="x"))],
                              {"concurrency": WorkflowConcurrency(2, "input.c"), "enabled": False}).request
    assert request.workflow.slug == "w" and request.workflow.concurrency.max_runs == 2
    assert request.workflow.HasField("enabled") and not request.workflow.enabled
    with pytest.raises(TypeError, match="steps"):
        create_workflow("w", Step("a"), {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no field 'colour'"):
        create_workflow("w", [], {"colour": "red"})
    # Top-level paths: the server replaces each field named whole; None clears one.
    update = update_workflow("orders", {"concurrency": None, "tags": {"a": "b"}}, "r3").request
    assert list(update.update_mask.paths) == ["concurrency", "tags"]
    assert (update.workflow.slug, update.workflow.id, update.workflow.etag) == ("orders", "", "r3")
    assert not update.workflow.HasField("concurrency")
    assert update_workflow("wf_1", {"name": "x"}, "").request.workflow.id == "wf_1"
    with pytest.raises(ValueError, match="at least one field"):
        update_workflow("orders", {}, "")
    # Validating writes nothing, so it is retried after UNAVAILABLE like a read; writes are not.
    assert validate_workflow("w", [Step("a", approval=ApprovalStep())], {}).retryable
    assert not create_workflow("w", [], {}).retryable and not update_workflow("w", {"name": "x"}, "").retryable
