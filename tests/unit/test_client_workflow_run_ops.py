"""The calls that operate workflow runs and send events: the requests they make, and which are retried after
UNAVAILABLE (reads, and events sent with an idempotency key; nothing that changes a run)."""

from __future__ import annotations

import json

import pytest

from strait_client import _workflow_run_ops as ops
from strait_client.v1 import event_pb2, workflow_run_pb2

R = workflow_run_pb2


def test_requests_name_the_run_and_step() -> None:
    assert ops.approve_step("wfr_1", "review", "ok").request == R.ApproveStepRequest(
        id="wfr_1", step_ref="review", comment="ok")
    assert ops.reject_step("wfr_1", "review", "no").request == R.RejectStepRequest(
        id="wfr_1", step_ref="review", reason="no")
    assert ops.skip_step("wfr_1", "s", "n/a").request == R.SkipWorkflowStepRequest(id="wfr_1", step_ref="s",
                                                                                   reason="n/a")
    assert ops.pause_workflow_run("wfr_1").request == R.PauseWorkflowRunRequest(id="wfr_1")
    assert ops.resume_workflow_run("wfr_1").request == R.ResumeWorkflowRunRequest(id="wfr_1")
    assert ops.workflow_run_graph("wfr_1").request == R.GetWorkflowRunGraphRequest(id="wfr_1")
    assert ops.send_event("k", None, "").service == "events"


@pytest.mark.parametrize("value", [None, {"fixed": True}, [1, 2], "text", 3.5, False])
def test_outputs_and_payloads_are_any_json_value(value: object) -> None:
    completed = ops.complete_step("wfr_1", "s", value).request
    assert isinstance(completed, R.CompleteWorkflowStepRequest) and json.loads(completed.output_json) == value
    sent = ops.send_event("k", value, "").request
    assert isinstance(sent, event_pb2.SendEventRequest) and json.loads(sent.payload_json) == value
    with pytest.raises(TypeError):
        ops.complete_step("wfr_1", "s", object())
    with pytest.raises(TypeError):
        ops.send_event("k", {1, 2}, "")


def test_only_reads_and_keyed_events_are_retried() -> None:
    assert ops.workflow_run_graph("wfr_1").retryable
    changes = [ops.approve_step("r", "s", ""), ops.reject_step("r", "s", ""), ops.complete_step("r", "s", None),
               ops.skip_step("r", "s", ""), ops.pause_workflow_run("r"), ops.resume_workflow_run("r")]
    assert [op.retryable for op in changes] == [False] * len(changes)
    assert not ops.send_event("k", 1, "").retryable  # a retry could send it twice
    assert ops.send_event("k", 1, "once").retryable  # a repeat returns the first event
    # Other calls that carry an idempotency key keep their rule (not retried).
    assert not ops.trigger_workflow("orders", None, 0, "k").retryable
