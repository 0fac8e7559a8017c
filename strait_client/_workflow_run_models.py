"""Workflow runs as the client reads them (see _models for the conventions): WorkflowRun, StepRun,
WorkflowRunEvent and WorkflowRunGraph (with WorkflowRunGraphNode and WorkflowRunGraphEdge) mirror the
strait.v1 messages of the same names field for field; TriggeredWorkflowRun adds what `workflows.trigger` did
(`idempotent_repeat`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strait_client._enums import SkipReason, StepRunStatus, WorkflowRunStatus, from_proto
from strait_client._models import json_of, time_of
from strait_client.v1 import workflow_run_pb2


def _run_fields(m: workflow_run_pb2.WorkflowRun) -> dict[str, Any]:
    return {
        "id": m.id, "project_id": m.project_id, "workflow_id": m.workflow_id, "version": m.version,
        "status": from_proto(WorkflowRunStatus, m.status), "input": json_of(m.input_json), "error": m.error,
        "idempotency_key": m.idempotency_key, "create_time": time_of(m, "create_time"),
        "start_time": time_of(m, "start_time"), "finish_time": time_of(m, "finish_time"),
        "update_time": time_of(m, "update_time"), "parent_workflow_run_id": m.parent_workflow_run_id,
        "parent_step_run_id": m.parent_step_run_id, "concurrency_key": m.concurrency_key,
        "deadline_time": time_of(m, "deadline_time"), "scheduled_time": time_of(m, "scheduled_time"),
    }


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One run of a workflow (strait.v1.WorkflowRun), of the definition `version` it started with. `input` is
    the decoded JSON object; `error` says why it failed or was canceled. `status` is None only for a status
    this client version does not know."""

    id: str
    project_id: str
    workflow_id: str
    version: int
    status: WorkflowRunStatus | None
    input: Any
    error: str
    idempotency_key: str
    create_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    update_time: datetime | None
    parent_workflow_run_id: str = ""  # a child run (of a sub_workflow step): its parent run
    parent_step_run_id: str = ""  # ... and the parent's step run
    concurrency_key: str = ""  # the value of its workflow's concurrency key for this run
    deadline_time: datetime | None = None  # when it times out (the workflow's timeout after its start)
    scheduled_time: datetime | None = None  # when a run triggered for later starts (None: it started at once)

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRun) -> WorkflowRun:
        """Decodes a strait.v1.WorkflowRun message.

        Args:
            m: The message.

        Returns:
            The workflow run.
        """
        return cls(**_run_fields(m))

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished (completed, failed or canceled)."""
        return self.status is not None and self.status.is_terminal


@dataclass(frozen=True, slots=True)
class TriggeredWorkflowRun(WorkflowRun):
    """The run `workflows.trigger` returns: a WorkflowRun, plus `idempotent_repeat`: the call created no run,
    the idempotency key matched an earlier run of the workflow, which is returned."""

    idempotent_repeat: bool = False

    @classmethod
    def from_response(cls, m: workflow_run_pb2.WorkflowRun, idempotent_repeat: bool) -> TriggeredWorkflowRun:
        """Decodes a run and the idempotent_repeat flag of the TriggerWorkflowResponse that carried it.

        Args:
            m: The strait.v1.WorkflowRun message.
            idempotent_repeat: The reply's idempotent_repeat.

        Returns:
            The run with its flag.
        """
        return cls(**_run_fields(m), idempotent_repeat=idempotent_repeat)


@dataclass(frozen=True, slots=True)
class MapCounts:
    """A map step's instances (strait.v1.MapCounts): how many, started, ended (however), and failed."""

    total: int
    started: int
    done: int
    failed: int

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.MapCounts) -> MapCounts:
        """Decodes a strait.v1.MapCounts message.

        Args:
            m: The message.

        Returns:
            The counts.
        """
        return cls(m.total, m.started, m.done, m.failed)


@dataclass(frozen=True, slots=True)
class StepRun:
    """One step of a workflow run (strait.v1.StepRun). `job_run_id` names the job step's run (a `client.runs`
    run) once it started; `output` is that run's decoded JSON output (None when empty); `skip_reason` is set on
    skipped steps."""

    id: str
    workflow_run_id: str
    step_ref: str
    status: StepRunStatus | None
    skip_reason: SkipReason | None
    job_run_id: str
    output: Any
    error: str
    create_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    waiting_reason: str = ""  # a waiting step's: "approval", "event:<key>" or "sleep"
    wake_time: datetime | None = None  # when a waiting step's timer fires (a sleep ends, a wait times out)
    map_index: int = -1  # an instance of a map step: its item's index; -1: a step of the definition
    map_counts: MapCounts | None = None  # a map step's instances
    child_workflow_run_id: str = ""  # a sub_workflow step's child run

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.StepRun) -> StepRun:
        """Decodes a strait.v1.StepRun message.

        Args:
            m: The message.

        Returns:
            The step run.
        """
        return cls(m.id, m.workflow_run_id, m.step_ref, from_proto(StepRunStatus, m.status),
                   from_proto(SkipReason, m.skip_reason), m.job_run_id, json_of(m.output_json), m.error,
                   time_of(m, "create_time"), time_of(m, "start_time"), time_of(m, "finish_time"),
                   m.waiting_reason, time_of(m, "wake_time"), m.map_index,
                   MapCounts.from_proto(m.map_counts) if m.HasField("map_counts") else None,
                   m.child_workflow_run_id)


@dataclass(frozen=True, slots=True)
class WorkflowRunGraphNode:
    """One step of a run's graph (strait.v1.WorkflowRunGraphNode). `kind` is "job", "approval",
    "wait_for_event", "sleep" or "sub_workflow"; `status` and `skip_reason` are None when unset or unknown to
    this client version; `waiting_reason` is set on waiting steps, `job_run_id` once a job step started."""

    step_ref: str
    kind: str
    status: StepRunStatus | None
    skip_reason: SkipReason | None
    waiting_reason: str
    job_run_id: str
    error: str
    start_time: datetime | None
    finish_time: datetime | None
    map_counts: MapCounts | None = None  # a map step's instances (one node for all of them)

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRunGraphNode) -> WorkflowRunGraphNode:
        """Decodes a strait.v1.WorkflowRunGraphNode message.

        Args:
            m: The message.

        Returns:
            The node.
        """
        return cls(m.step_ref, m.kind, from_proto(StepRunStatus, m.status), from_proto(SkipReason, m.skip_reason),
                   m.waiting_reason, m.job_run_id, m.error, time_of(m, "start_time"), time_of(m, "finish_time"),
                   MapCounts.from_proto(m.map_counts) if m.HasField("map_counts") else None)


@dataclass(frozen=True, slots=True)
class WorkflowRunGraphEdge:
    """A dependency in a run's graph (strait.v1.WorkflowRunGraphEdge): `child` depends on `parent` (step refs)."""

    parent: str
    child: str

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRunGraphEdge) -> WorkflowRunGraphEdge:
        """Decodes a strait.v1.WorkflowRunGraphEdge message.

        Args:
            m: The message.

        Returns:
            The edge.
        """
        return cls(m.parent, m.child)


@dataclass(frozen=True, slots=True)
class WorkflowRunGraph:
    """A workflow run as a graph (strait.v1.WorkflowRunGraph), as `workflow_runs.graph` returns it: one node
    per step in definition order, one edge per `depends_on` entry (parent -> child), the `roots` (steps
    without parents) and the `ready` steps (READY: waiting for the paused run to be resumed). `status` is the
    run's, None only for a status this client version does not know."""

    workflow_run_id: str
    version: int
    status: WorkflowRunStatus | None
    nodes: tuple[WorkflowRunGraphNode, ...]
    edges: tuple[WorkflowRunGraphEdge, ...]
    roots: tuple[str, ...]
    ready: tuple[str, ...]

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRunGraph) -> WorkflowRunGraph:
        """Decodes a strait.v1.WorkflowRunGraph message.

        Args:
            m: The message.

        Returns:
            The graph.
        """
        return cls(m.workflow_run_id, m.version, from_proto(WorkflowRunStatus, m.status),
                   tuple(WorkflowRunGraphNode.from_proto(n) for n in m.nodes),
                   tuple(WorkflowRunGraphEdge.from_proto(e) for e in m.edges), tuple(m.roots), tuple(m.ready))

    def node(self, step_ref: str) -> WorkflowRunGraphNode:
        """The node of a step.

        Args:
            step_ref: The step's ref.

        Returns:
            Its node.

        Raises:
            KeyError: The run has no such step.
        """
        for n in self.nodes:
            if n.step_ref == step_ref:
                return n
        raise KeyError(step_ref)


_STATUS_TYPES: dict[str, type[WorkflowRunStatus] | type[StepRunStatus]] = {
    "run_status": WorkflowRunStatus, "step_status": StepRunStatus,
}


def _status(event_type: str, name: str) -> WorkflowRunStatus | StepRunStatus | None:
    try:
        return _STATUS_TYPES[event_type](name)
    except (KeyError, ValueError):
        return None  # no status, or one this client version does not know


@dataclass(frozen=True, slots=True)
class WorkflowRunEvent:
    """What happened in a workflow run (strait.v1.WorkflowRunEvent), in `sequence` order per run. `type` is
    "run_status" (`from_status`/`to_status` are WorkflowRunStatus members), "step_status" (StepRunStatus members,
    `step_ref` set) or "step_decision" (why a step runs or is skipped, in `message`). A status is None when
    unset (`from_status` of the first event) or unknown to this client version."""

    workflow_run_id: str
    sequence: int
    type: str
    step_ref: str
    from_status: WorkflowRunStatus | StepRunStatus | None
    to_status: WorkflowRunStatus | StepRunStatus | None
    message: str
    create_time: datetime | None

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRunEvent) -> WorkflowRunEvent:
        """Decodes a strait.v1.WorkflowRunEvent message.

        Args:
            m: The message.

        Returns:
            The event.
        """
        return cls(m.workflow_run_id, m.sequence, m.type, m.step_ref, _status(m.type, m.from_status),
                   _status(m.type, m.to_status), m.message, time_of(m, "create_time"))

    @property
    def ends_run(self) -> bool:
        """Whether this is the run's final status change (no event of the run follows it)."""
        return self.type == "run_status" and isinstance(self.to_status, WorkflowRunStatus) and \
            self.to_status.is_terminal


@dataclass(frozen=True, slots=True)
class WorkflowRunChange:
    """A workflow run created or changing status, from the project's feed (`workflow_runs.watch_all`): its
    "run_status" event, its workflow, and the token to resume the feed after it."""

    event: WorkflowRunEvent
    workflow_id: str
    resume_token: str

    @property
    def workflow_run_id(self) -> str:
        return self.event.workflow_run_id

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WatchWorkflowRunsResponse) -> WorkflowRunChange:
        """Decodes a strait.v1.WatchWorkflowRunsResponse that carries an event.

        Args:
            m: The message.

        Returns:
            The change.
        """
        return cls(WorkflowRunEvent.from_proto(m.event), m.workflow_id, m.resume_token)


@dataclass(frozen=True, slots=True)
class WorkflowRunSnapshot:
    """A workflow run and its steps as of one event sequence (strait.v1.WorkflowRunSnapshot): every event up to
    `sequence` is reflected, none after it. The first item of `workflow_runs.watch(..., snapshot=True)`."""

    workflow_run: WorkflowRun
    step_runs: tuple[StepRun, ...]  # the steps of the definition in its order (map steps with their counts)
    sequence: int

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.WorkflowRunSnapshot) -> WorkflowRunSnapshot:
        """Decodes a strait.v1.WorkflowRunSnapshot message.

        Args:
            m: The message.

        Returns:
            The snapshot.
        """
        return cls(WorkflowRun.from_proto(m.workflow_run), tuple(StepRun.from_proto(s) for s in m.step_runs),
                   m.sequence)


@dataclass(frozen=True, slots=True)
class MapProgress:
    """A running map step's counts changed (strait.v1.MapProgress): at most one a second per map step, from
    `workflow_runs.watch(..., map_progress=True)`. Not an event: it has no sequence."""

    step_ref: str
    counts: MapCounts
    time: datetime | None

    @classmethod
    def from_proto(cls, m: workflow_run_pb2.MapProgress) -> MapProgress:
        """Decodes a strait.v1.MapProgress message.

        Args:
            m: The message.

        Returns:
            The progress.
        """
        return cls(m.step_ref, MapCounts.from_proto(m.counts), time_of(m, "time"))
