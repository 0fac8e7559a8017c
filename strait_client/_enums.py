"""The API's enums as `enum.StrEnum`: each value is the lower-case name the docs use (`RunStatus.COMPLETED ==
"completed"`), so members compare equal to, and hash like, those strings.

Each enum mirrors a protobuf enum without its `..._UNSPECIFIED` value: an unset field reads as None.
"""

from __future__ import annotations

import enum
from typing import TypeVar, cast

from google.protobuf.descriptor import EnumDescriptor

from strait_client.v1 import circuit_pb2, job_pb2, project_pb2, run_pb2, workflow_pb2, workflow_run_pb2

E = TypeVar("E", bound=enum.StrEnum)


class RunStatus(enum.StrEnum):
    """Every state of a run (docs: README "Run statuses"). Terminal ones are in TERMINAL_STATUSES."""

    DELAYED = "delayed"
    QUEUED = "queued"
    DEQUEUED = "dequeued"
    EXECUTING = "executing"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    SYSTEM_FAILED = "system_failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    DEAD_LETTER = "dead_letter"
    REPLAY_STAGED = "replay_staged"
    PAUSED = "paused"

    @property
    def is_terminal(self) -> bool:
        """Whether a run in this status never leaves it (ReplayRun creates a new run instead)."""
        return self in TERMINAL_STATUSES


class ExecutionMode(enum.StrEnum):
    """How runs of a job are delivered."""

    HTTP = "http"
    WORKER = "worker"


class RetryStrategy(enum.StrEnum):
    """How the delay between a job's attempts grows."""

    EXPONENTIAL = "exponential"
    FIXED = "fixed"


class CronOverlapPolicy(enum.StrEnum):
    """What a cron tick does while an earlier run of the job is still active."""

    ALLOW = "allow"
    SKIP = "skip"
    CANCEL_RUNNING = "cancel_running"


class BudgetAction(enum.StrEnum):
    """What happens once a project's monthly spend reaches its budget."""

    NOTIFY = "notify"
    REJECT = "reject"


class CircuitState(enum.StrEnum):
    """The state of an endpoint's circuit breaker (docs/flow-control.md#circuit-breakers)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class TriggerRule(enum.StrEnum):
    """When a workflow step runs, given how the steps it depends on ended (docs/workflows.md#trigger-rules)."""

    ALL_SUCCESS = "all_success"
    NONE_FAILED = "none_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"


class OnFailure(enum.StrEnum):
    """What a workflow step's failure does to its workflow run."""

    FAIL_WORKFLOW = "fail_workflow"
    CONTINUE = "continue"
    IGNORE = "ignore"


class ConcurrencyStrategy(enum.StrEnum):
    """What happens to a new workflow run when its concurrency key already has `max_runs` runs."""

    QUEUE = "queue"
    CANCEL_IN_PROGRESS = "cancel_in_progress"
    CANCEL_NEWEST = "cancel_newest"


class WorkflowRunStatus(enum.StrEnum):
    """Every state of a workflow run; completed, failed, canceled and timed out are final (`is_terminal`). A
    paused run starts no step until it is resumed; a queued one waits for a concurrency slot of its workflow; a
    scheduled one waits for its `scheduled_time`."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    SCHEDULED = "scheduled"

    @property
    def is_terminal(self) -> bool:
        """Whether a workflow run in this status has ended (a retry or replay may open a completed or failed
        one again)."""
        return self in (WorkflowRunStatus.COMPLETED, WorkflowRunStatus.FAILED, WorkflowRunStatus.CANCELED,
                        WorkflowRunStatus.TIMED_OUT)


class StepRunStatus(enum.StrEnum):
    """Every state of a step of a workflow run: pending (waiting for its parents), running (its job run is
    queued or executing), waiting (an approval, event wait or sleep), then completed, failed, skipped or
    canceled. A step decided to run while its run is paused is ready until the run is resumed."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"


class SkipReason(enum.StrEnum):
    """Why a step was skipped (docs/workflows.md#trigger-rules)."""

    CONDITION_FALSE = "condition_false"
    UPSTREAM_FAILED = "upstream_failed"
    ALL_UPSTREAM_SKIPPED = "all_upstream_skipped"
    TRIGGER_RULE_UNSATISFIABLE = "trigger_rule_unsatisfiable"
    MANUAL = "manual"
    DISABLED = "disabled"  # by the trigger's step_overrides


TERMINAL_STATUSES: frozenset[RunStatus] = frozenset({
    RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED, RunStatus.SYSTEM_FAILED,
    RunStatus.CANCELED, RunStatus.EXPIRED, RunStatus.DEAD_LETTER,
})
"""Run statuses a run never leaves (ReplayRun creates a new run instead). Members equal their strings, so
`"completed" in TERMINAL_STATUSES` holds too."""


def is_terminal(status: str | None) -> bool:
    """Whether a run status is final.

    Args:
        status: A RunStatus, or its lower-case name ("dead_letter"); None (no status) is not final.

    Returns:
        True for the statuses in TERMINAL_STATUSES.
    """
    return status in TERMINAL_STATUSES


def short_name(enum_descriptor: EnumDescriptor, proto_name: str) -> str:
    """RUN_STATUS_DEAD_LETTER -> dead_letter: the proto name without the enum's prefix, lower-cased."""
    zero = enum_descriptor.values_by_number[0].name  # "RUN_STATUS_UNSPECIFIED"
    return proto_name.removeprefix(zero.removesuffix("UNSPECIFIED")).lower()


PROTO_ENUMS: dict[type[enum.StrEnum], EnumDescriptor] = {
    RunStatus: run_pb2.RunStatus.DESCRIPTOR,
    ExecutionMode: job_pb2.ExecutionMode.DESCRIPTOR,
    RetryStrategy: job_pb2.RetryStrategy.DESCRIPTOR,
    CronOverlapPolicy: job_pb2.CronOverlapPolicy.DESCRIPTOR,
    BudgetAction: project_pb2.BudgetAction.DESCRIPTOR,
    CircuitState: circuit_pb2.CircuitState.DESCRIPTOR,
    TriggerRule: workflow_pb2.TriggerRule.DESCRIPTOR,
    OnFailure: workflow_pb2.OnFailure.DESCRIPTOR,
    ConcurrencyStrategy: workflow_pb2.ConcurrencyStrategy.DESCRIPTOR,
    WorkflowRunStatus: workflow_run_pb2.WorkflowRunStatus.DESCRIPTOR,
    StepRunStatus: workflow_run_pb2.StepRunStatus.DESCRIPTOR,
    SkipReason: workflow_run_pb2.SkipReason.DESCRIPTOR,
}
"""Each enum and the protobuf enum it mirrors (a unit test checks that their values match one to one)."""

_BY_NUMBER: dict[type[enum.StrEnum], dict[int, enum.StrEnum]] = {
    cls: {v.number: cls(short_name(descriptor, v.name)) for v in descriptor.values if v.number}
    for cls, descriptor in PROTO_ENUMS.items()
}


def from_proto(cls: type[E], number: int) -> E | None:
    """The member for a proto enum number; None for 0 (unset) and for a number this client does not know (a
    value added by a newer server)."""
    return cast("E | None", _BY_NUMBER[cls].get(number))
