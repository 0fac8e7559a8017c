"""The client's result types: they mirror the API's messages field for field, and decode them as documented."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client import (
    ApiKey,
    ApiRateLimit,
    ApprovalStep,
    AttemptRecord,
    BudgetAction,
    CircuitState,
    CreatedApiKey,
    EndpointCircuit,
    Event,
    FeedEvent,
    Job,
    JobRetryPolicy,
    JobStep,
    MapSpec,
    Project,
    RetryStrategy,
    Run,
    RunEvent,
    RunStatus,
    SentEvent,
    SkipReason,
    SleepStep,
    Step,
    StepRetryPolicy,
    StepRun,
    StepRunStatus,
    SubWorkflowStep,
    TriggeredRun,
    TriggeredWorkflowRun,
    WaitForEventStep,
    Workflow,
    WorkflowConcurrency,
    WorkflowRun,
    WorkflowRunEvent,
    WorkflowRunGraph,
    WorkflowRunGraphEdge,
    WorkflowRunGraphNode,
    WorkflowRunStatus,
    WorkflowVersion,
)
from strait_client._convert import fill, mask_paths
from strait_client._enums import PROTO_ENUMS, short_name
from strait_client.v1 import circuit_pb2, event_pb2, job_pb2, project_pb2, run_pb2, workflow_pb2, workflow_run_pb2

# Each type, its message, and the message fields it leaves out on purpose.
MIRRORS: list[tuple[type, Descriptor, set[str]]] = [
    (Job, job_pb2.Job.DESCRIPTOR, {"signing_secret"}),  # write-only: never returned
    (JobRetryPolicy, job_pb2.RetryPolicy.DESCRIPTOR, set()),
    (Run, run_pb2.Run.DESCRIPTOR, set()),
    (AttemptRecord, run_pb2.RunAttempt.DESCRIPTOR, set()),
    (RunEvent, run_pb2.RunEvent.DESCRIPTOR, set()),
    (Project, project_pb2.Project.DESCRIPTOR, set()),
    (ApiKey, project_pb2.ApiKey.DESCRIPTOR, set()),
    (ApiRateLimit, project_pb2.ApiRateLimit.DESCRIPTOR, set()),
    (EndpointCircuit, circuit_pb2.EndpointCircuit.DESCRIPTOR, set()),
    (Workflow, workflow_pb2.Workflow.DESCRIPTOR, set()),
    (WorkflowVersion, workflow_pb2.WorkflowVersion.DESCRIPTOR, set()),
    (WorkflowConcurrency, workflow_pb2.WorkflowConcurrency.DESCRIPTOR, set()),
    (Step, workflow_pb2.Step.DESCRIPTOR, set()),
    (JobStep, workflow_pb2.JobStep.DESCRIPTOR, set()),
    (ApprovalStep, workflow_pb2.ApprovalStep.DESCRIPTOR, set()),
    (WaitForEventStep, workflow_pb2.WaitForEventStep.DESCRIPTOR, set()),
    (SleepStep, workflow_pb2.SleepStep.DESCRIPTOR, set()),
    (SubWorkflowStep, workflow_pb2.SubWorkflowStep.DESCRIPTOR, set()),
    (MapSpec, workflow_pb2.MapSpec.DESCRIPTOR, set()),
    (StepRetryPolicy, workflow_pb2.StepRetryPolicy.DESCRIPTOR, set()),
    (WorkflowRun, workflow_run_pb2.WorkflowRun.DESCRIPTOR, set()),
    (StepRun, workflow_run_pb2.StepRun.DESCRIPTOR, set()),
    (WorkflowRunEvent, workflow_run_pb2.WorkflowRunEvent.DESCRIPTOR, set()),
    (WorkflowRunGraph, workflow_run_pb2.WorkflowRunGraph.DESCRIPTOR, set()),
    (WorkflowRunGraphNode, workflow_run_pb2.WorkflowRunGraphNode.DESCRIPTOR, set()),
    (WorkflowRunGraphEdge, workflow_run_pb2.WorkflowRunGraphEdge.DESCRIPTOR, set()),
    (Event, event_pb2.Event.DESCRIPTOR, set()),
]


@pytest.mark.parametrize(("cls", "descriptor", "left_out"), MIRRORS, ids=lambda x: getattr(x, "__name__", ""))
def test_types_mirror_their_messages(cls: type, descriptor: Descriptor, left_out: set[str]) -> None:
    expected = [f.name.removesuffix("_json") for f in descriptor.fields if f.name not in left_out]
    assert [f.name for f in dataclasses.fields(cls)] == expected


def test_subtypes_add_only_their_own_fields() -> None:
    def names(cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
    assert names(TriggeredRun) == [*names(Run), "idempotent_repeat", "deduplicated", "debounced"]
    assert names(FeedEvent) == [*names(RunEvent), "resume_token"]
    assert names(CreatedApiKey) == [*names(ApiKey), "secret"]
    assert names(TriggeredWorkflowRun) == [*names(WorkflowRun), "idempotent_repeat"]
    # SentEvent adds what SendEventResponse says besides the event, under the same names.
    response_fields = [f.name for f in event_pb2.SendEventResponse.DESCRIPTOR.fields if f.name != "event"]
    assert names(SentEvent) == [*names(Event), *response_fields]


@pytest.mark.parametrize("cls", list(PROTO_ENUMS), ids=lambda c: c.__name__)
def test_enums_match_the_proto_enums(cls: type) -> None:
    descriptor = PROTO_ENUMS[cls]
    assert [m.value for m in cls] == [short_name(descriptor, v.name) for v in descriptor.values if v.number]  # type: ignore[attr-defined]


def _ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def test_a_run_is_decoded() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    message = run_pb2.Run(
        id="run_1", status=run_pb2.RUN_STATUS_DEAD_LETTER, payload_json='{"n": 12345678901234567890}',
        create_time=_ts(now), timeout=Duration(seconds=30), tags={"a": "b"},
        attempts=[run_pb2.RunAttempt(attempt=1, status_code=503, duration=Duration(nanos=5_000_000))])
    run = Run.from_proto(message)
    assert run.status is RunStatus.DEAD_LETTER and run.is_terminal
    assert run.payload == {"n": 12345678901234567890} and run.output is None
    assert run.create_time == now and run.create_time.tzinfo is UTC and run.finish_time is None
    assert run.timeout == timedelta(seconds=30) and run.tags == {"a": "b"}
    assert run.attempts == (AttemptRecord(1, 503, timedelta(milliseconds=5), "", "", None),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = RunStatus.QUEUED  # type: ignore[misc]


def test_unknown_and_unset_enum_values_read_as_none() -> None:
    assert Run.from_proto(run_pb2.Run(status=99)).status is None  # a status added by a newer server
    event = RunEvent.from_proto(run_pb2.RunEvent(type="status_change", to_status=run_pb2.RUN_STATUS_QUEUED))
    assert event.from_status is None and event.to_status is RunStatus.QUEUED and not event.ends_run
    assert RunEvent.from_proto(run_pb2.RunEvent(type="status_change", to_status=run_pb2.RUN_STATUS_CANCELED)).ends_run


def test_a_job_is_decoded() -> None:
    job = Job.from_proto(job_pb2.Job(id="job_1", retry_policy=job_pb2.RetryPolicy(
        strategy=job_pb2.RETRY_STRATEGY_FIXED, max_delay=Duration(seconds=60))))
    assert job.retry_policy == JobRetryPolicy(RetryStrategy.FIXED, None, timedelta(minutes=1))
    assert job.enabled is True  # unset means enabled
    assert job.execution_mode is None and job.cron_overlap_policy is None and job.next_fire_time is None
    assert Job.from_proto(job_pb2.Job(enabled=False)).enabled is False


def test_projects_keys_and_circuits_are_decoded() -> None:
    project = Project.from_proto(project_pb2.Project(
        id="proj_1", monthly_budget_microusd=0, budget_action=project_pb2.BUDGET_ACTION_REJECT,
        api_rate_limit=project_pb2.ApiRateLimit(requests=5, window=Duration(seconds=1))))
    assert project.monthly_budget_microusd == 0  # a zero budget, not "no budget"
    assert project.budget_action is BudgetAction.REJECT
    assert project.api_rate_limit == ApiRateLimit(5, timedelta(seconds=1))
    assert Project.from_proto(project_pb2.Project()).monthly_budget_microusd is None

    created = CreatedApiKey.from_response(project_pb2.CreateApiKeyResponse(
        api_key=project_pb2.ApiKey(id="key_1", key_prefix="strait_ab"), secret="strait_abcdef"))
    assert (created.id, created.key_prefix, created.secret) == ("key_1", "strait_ab", "strait_abcdef")
    assert "strait_abcdef" not in repr(created) and isinstance(created, ApiKey)

    circuit = EndpointCircuit.from_proto(circuit_pb2.EndpointCircuit(
        endpoint_url="http://x", state=circuit_pb2.CIRCUIT_STATE_HALF_OPEN))
    assert circuit.state is CircuitState.HALF_OPEN and circuit.state == "half_open" and circuit.open_until is None


def test_result_types_are_accepted_as_input() -> None:
    policy = JobRetryPolicy(RetryStrategy.FIXED, timedelta(seconds=2))
    job = fill(job_pb2.Job(), {"retry_policy": policy})
    assert job.retry_policy == job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                                   initial_delay=Duration(seconds=2))
    # A dataclass replaces the whole message, as a message instance does.
    assert mask_paths(job_pb2.Job.DESCRIPTOR, {"retry_policy": policy}) == [
        "retry_policy.strategy", "retry_policy.initial_delay", "retry_policy.max_delay"]
    limit = fill(project_pb2.Project(), {"api_rate_limit": ApiRateLimit(10, timedelta(minutes=1))})
    assert limit.api_rate_limit.window == Duration(seconds=60)
    statuses = fill(run_pb2.ListRunsRequest(), {"statuses": [RunStatus.FAILED, "completed"]})
    assert list(statuses.statuses) == [run_pb2.RUN_STATUS_FAILED, run_pb2.RUN_STATUS_COMPLETED]


def test_workflow_runs_steps_and_events_are_decoded() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    W = workflow_run_pb2
    run = WorkflowRun.from_proto(W.WorkflowRun(id="wfr_1", status=W.WORKFLOW_RUN_STATUS_CANCELED,
                                               input_json='{"order": 7}', create_time=_ts(now)))
    assert run.status is WorkflowRunStatus.CANCELED and run.status == "canceled" and run.is_terminal
    assert run.input == {"order": 7} and run.create_time == now and run.finish_time is None
    assert not WorkflowRun.from_proto(W.WorkflowRun(status=W.WORKFLOW_RUN_STATUS_RUNNING)).is_terminal
    assert WorkflowRun.from_proto(W.WorkflowRun(status=99)).status is None
    triggered = TriggeredWorkflowRun.from_response(W.WorkflowRun(id="wfr_1"), True)
    assert isinstance(triggered, WorkflowRun) and triggered.idempotent_repeat and triggered.input is None

    step = StepRun.from_proto(W.StepRun(step_ref="risk", status=W.STEP_RUN_STATUS_SKIPPED,
                                        skip_reason=W.SKIP_REASON_CONDITION_FALSE, output_json='{"score": 3}'))
    assert step.status is StepRunStatus.SKIPPED and step.skip_reason is SkipReason.CONDITION_FALSE
    assert step.output == {"score": 3}
    assert StepRun.from_proto(W.StepRun()).skip_reason is None and StepRun.from_proto(W.StepRun()).output is None

    final = WorkflowRunEvent.from_proto(W.WorkflowRunEvent(sequence=9, type="run_status", from_status="running",
                                                           to_status="failed"))
    assert final.from_status is WorkflowRunStatus.RUNNING and final.to_status is WorkflowRunStatus.FAILED
    assert final.ends_run
    step_event = WorkflowRunEvent.from_proto(W.WorkflowRunEvent(type="step_status", step_ref="a",
                                                                from_status="pending", to_status="completed"))
    assert step_event.to_status is StepRunStatus.COMPLETED and not step_event.ends_run
    decision = WorkflowRunEvent.from_proto(W.WorkflowRunEvent(type="step_decision", message="condition false"))
    assert decision.from_status is None and decision.to_status is None and not decision.ends_run
    first = WorkflowRunEvent.from_proto(W.WorkflowRunEvent(type="run_status", to_status="running"))
    assert first.from_status is None and first.to_status is WorkflowRunStatus.RUNNING and not first.ends_run
    paused = WorkflowRunEvent.from_proto(W.WorkflowRunEvent(type="run_status", to_status="paused"))
    assert paused.to_status is WorkflowRunStatus.PAUSED and not paused.ends_run
    # A status this client version does not know reads as None, not an error.
    assert WorkflowRunEvent.from_proto(W.WorkflowRunEvent(type="run_status", to_status="later")).to_status is None


def test_run_graphs_are_decoded() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    W = workflow_run_pb2
    graph = WorkflowRunGraph.from_proto(W.WorkflowRunGraph(
        workflow_run_id="wfr_1", version=2, status=W.WORKFLOW_RUN_STATUS_PAUSED,
        nodes=[W.WorkflowRunGraphNode(step_ref="a", kind="job", status=W.STEP_RUN_STATUS_COMPLETED,
                                      job_run_id="run_1", start_time=_ts(now), finish_time=_ts(now)),
               W.WorkflowRunGraphNode(step_ref="b", kind="approval", status=W.STEP_RUN_STATUS_WAITING,
                                      waiting_reason="approval"),
               W.WorkflowRunGraphNode(step_ref="c", kind="job", status=W.STEP_RUN_STATUS_READY),
               W.WorkflowRunGraphNode(step_ref="d", kind="sleep", status=W.STEP_RUN_STATUS_SKIPPED,
                                      skip_reason=W.SKIP_REASON_MANUAL)],
        edges=[W.WorkflowRunGraphEdge(parent="a", child="b"), W.WorkflowRunGraphEdge(parent="a", child="c")],
        roots=["a", "d"], ready=["c"]))
    assert graph.status is WorkflowRunStatus.PAUSED and not WorkflowRunStatus.PAUSED.is_terminal
    assert (graph.workflow_run_id, graph.version, graph.roots, graph.ready) == ("wfr_1", 2, ("a", "d"), ("c",))
    assert graph.edges == (WorkflowRunGraphEdge("a", "b"), WorkflowRunGraphEdge("a", "c"))
    assert graph.nodes[0] == WorkflowRunGraphNode("a", "job", StepRunStatus.COMPLETED, None, "", "run_1", "", now, now)
    assert [n.status for n in graph.nodes] == ["completed", "waiting", "ready", "skipped"]
    assert graph.node("b").waiting_reason == "approval" and graph.node("b").start_time is None
    assert graph.node("d").skip_reason is SkipReason.MANUAL and graph.node("c").skip_reason is None
    with pytest.raises(KeyError):
        graph.node("nope")
    empty = WorkflowRunGraph.from_proto(W.WorkflowRunGraph(status=99))
    assert empty.status is None and empty.nodes == () and empty.edges == ()
    assert WorkflowRunGraphNode.from_proto(W.WorkflowRunGraphNode(status=99)).status is None


def test_sent_events_are_decoded() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    sent = SentEvent.from_response(event_pb2.SendEventResponse(
        event=event_pb2.Event(id="evt_1", key="order-7-paid", payload_json='{"amount": 12}', idempotency_key="k",
                              create_time=_ts(now)),
        matched_steps=2, idempotent_repeat=True))
    assert isinstance(sent, Event) and sent.matched_steps == 2 and sent.idempotent_repeat
    assert (sent.id, sent.key, sent.payload, sent.idempotency_key, sent.create_time) == (
        "evt_1", "order-7-paid", {"amount": 12}, "k", now)
    assert Event.from_proto(event_pb2.Event(payload_json="null")).payload is None
    assert Event.from_proto(event_pb2.Event(payload_json='"text"')).payload == "text"
    with pytest.raises(dataclasses.FrozenInstanceError):
        sent.matched_steps = 0  # type: ignore[misc]
