"""Workflow-run calls as data (see _ops): triggering a workflow, the WorkflowRunService calls, and sending the
events that waiting steps wait for (EventService)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from strait_client._convert import fill
from strait_client._event_models import SentEvent
from strait_client._ops import Op, Page, page_of, status_list, workflow_selector
from strait_client._workflow_run_models import (
    StepRun,
    TriggeredWorkflowRun,
    WorkflowRun,
    WorkflowRunEvent,
    WorkflowRunGraph,
)
from strait_client.v1 import event_pb2, workflow_pb2, workflow_run_pb2

R = workflow_run_pb2


def _input_json(run_input: Mapping[str, Any] | None) -> str:
    if run_input is None:
        return ""
    if not isinstance(run_input, Mapping):
        raise TypeError(f"input must be a dict (a JSON object), not {type(run_input).__name__}")
    return json.dumps(dict(run_input))


def _workflow_run(response: Any) -> WorkflowRun:
    return WorkflowRun.from_proto(response.workflow_run)


def _step_run(response: Any) -> StepRun:
    return StepRun.from_proto(response.step_run)


def _step_overrides(overrides: Mapping[str, bool] | None) -> list[workflow_pb2.StepOverride]:
    if overrides is None:
        return []
    if not isinstance(overrides, Mapping):
        raise TypeError(f"step_overrides must be a dict of step ref to enabled, not {type(overrides).__name__}")
    for ref, enabled in overrides.items():
        if not isinstance(ref, str) or not isinstance(enabled, bool):
            raise TypeError(f"step_overrides maps step refs (str) to enabled (bool), not {ref!r}: {enabled!r}")
    return [workflow_pb2.StepOverride(ref=ref, enabled=enabled) for ref, enabled in overrides.items()]


def trigger_workflow(id_or_slug: str, run_input: Mapping[str, Any] | None, version: int, idempotency_key: str,
                     scheduled_time: datetime | None = None,
                     step_overrides: Mapping[str, bool] | None = None) -> Op[TriggeredWorkflowRun]:
    request = workflow_pb2.TriggerWorkflowRequest(input_json=_input_json(run_input), version=version,
                                                  idempotency_key=idempotency_key,
                                                  step_overrides=_step_overrides(step_overrides),
                                                  **workflow_selector(id_or_slug))
    if scheduled_time is not None:
        fill(request, {"scheduled_time": scheduled_time})
    return Op("workflows", "TriggerWorkflow", request,
              lambda response: TriggeredWorkflowRun.from_response(response.workflow_run, response.idempotent_repeat))


def get_workflow_run(run_id: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "GetWorkflowRun", R.GetWorkflowRunRequest(id=run_id), _workflow_run)


def list_workflow_runs(workflow_id: str | None, statuses: Iterable[str] | None,
                       page_size: int) -> Callable[[str], Op[Page[WorkflowRun]]]:
    base = fill(R.ListWorkflowRunsRequest(page_size=page_size),
                {"workflow_id": workflow_id, "statuses": status_list(statuses)})

    def make(token: str) -> Op[Page[WorkflowRun]]:
        request = R.ListWorkflowRunsRequest()
        request.CopyFrom(base)
        request.page_token = token
        return Op("workflow_runs", "ListWorkflowRuns", request, page_of("workflow_runs", WorkflowRun.from_proto))
    return make


def cancel_workflow_run(run_id: str, reason: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "CancelWorkflowRun", R.CancelWorkflowRunRequest(id=run_id, reason=reason),
              _workflow_run)


def list_step_runs(run_id: str) -> Op[list[StepRun]]:
    return Op("workflow_runs", "ListStepRuns", R.ListStepRunsRequest(workflow_run_id=run_id),
              lambda response: [StepRun.from_proto(s) for s in response.step_runs])


def list_step_instances(run_id: str, step_ref: str) -> Callable[[str], Op[Page[StepRun]]]:
    """A step and its map instances, a page at a time."""
    def make(token: str) -> Op[Page[StepRun]]:
        request = R.ListStepRunsRequest(workflow_run_id=run_id, step_ref=step_ref, page_size=1000, page_token=token)
        return Op("workflow_runs", "ListStepRuns", request, page_of("step_runs", StepRun.from_proto))
    return make


def list_workflow_run_events(run_id: str, after_sequence: int,
                             page_size: int) -> Callable[[str], Op[Page[WorkflowRunEvent]]]:
    """ListWorkflowRunEvents has no page token: the "token" here is the last sequence received, and a full page
    means there may be more after it."""
    def convert(response: Any) -> Page[WorkflowRunEvent]:
        events = [WorkflowRunEvent.from_proto(e) for e in response.events]
        return events, str(events[-1].sequence) if len(events) >= page_size else ""

    return lambda token: Op("workflow_runs", "ListWorkflowRunEvents", R.ListWorkflowRunEventsRequest(
        workflow_run_id=run_id, after_sequence=int(token) if token else after_sequence, page_size=page_size),
        convert)


def watch_workflow_run_request(run_id: str, after_sequence: int, *, snapshot: bool = False
                               ) -> R.WatchWorkflowRunRequest:
    return R.WatchWorkflowRunRequest(workflow_run_id=run_id, after_sequence=after_sequence, snapshot=snapshot)


def watch_workflow_runs_request(workflow_id: str, resume_token: str, from_start: bool) -> R.WatchWorkflowRunsRequest:
    return R.WatchWorkflowRunsRequest(workflow_id=workflow_id, resume_token=resume_token, from_start=from_start)


# Operating runs: approvals, steps ended by hand, pause and resume (none retried: each changes the run once).


def approve_step(run_id: str, step_ref: str, comment: str) -> Op[StepRun]:
    return Op("workflow_runs", "ApproveStep", R.ApproveStepRequest(id=run_id, step_ref=step_ref, comment=comment),
              _step_run)


def reject_step(run_id: str, step_ref: str, reason: str) -> Op[StepRun]:
    return Op("workflow_runs", "RejectStep", R.RejectStepRequest(id=run_id, step_ref=step_ref, reason=reason),
              _step_run)


def complete_step(run_id: str, step_ref: str, output: Any) -> Op[StepRun]:
    request = R.CompleteWorkflowStepRequest(id=run_id, step_ref=step_ref, output_json=json.dumps(output))
    return Op("workflow_runs", "CompleteWorkflowStep", request, _step_run)


def skip_step(run_id: str, step_ref: str, reason: str) -> Op[StepRun]:
    return Op("workflow_runs", "SkipWorkflowStep",
              R.SkipWorkflowStepRequest(id=run_id, step_ref=step_ref, reason=reason), _step_run)


def retry_workflow_step(run_id: str, step_ref: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "RetryWorkflowStep", R.RetryWorkflowStepRequest(id=run_id, step_ref=step_ref),
              _workflow_run)


def replay_workflow_subtree(run_id: str, step_ref: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "ReplayWorkflowSubtree", R.ReplayWorkflowSubtreeRequest(id=run_id, step_ref=step_ref),
              _workflow_run)


def pause_workflow_run(run_id: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "PauseWorkflowRun", R.PauseWorkflowRunRequest(id=run_id), _workflow_run)


def resume_workflow_run(run_id: str) -> Op[WorkflowRun]:
    return Op("workflow_runs", "ResumeWorkflowRun", R.ResumeWorkflowRunRequest(id=run_id), _workflow_run)


def workflow_run_graph(run_id: str) -> Op[WorkflowRunGraph]:
    return Op("workflow_runs", "GetWorkflowRunGraph", R.GetWorkflowRunGraphRequest(id=run_id),
              lambda response: WorkflowRunGraph.from_proto(response.graph))


def send_event(key: str, payload: Any, idempotency_key: str) -> Op[SentEvent]:
    """Retried only with an idempotency key: a repeat then returns the first event instead of resolving waits
    again. Without one a retry could send the event twice, so it is not retried."""
    request = event_pb2.SendEventRequest(key=key, payload_json=json.dumps(payload), idempotency_key=idempotency_key)
    return Op("events", "SendEvent", request, SentEvent.from_response, repeatable=bool(idempotency_key))
