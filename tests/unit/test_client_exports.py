"""Pins the public surface of strait_client: adding or removing an export is a deliberate change."""

from __future__ import annotations

import grpc

import strait_client
from strait_client import StraitError

EXPECTED = [
    "TERMINAL_STATUSES",
    "AbortedError",
    "AlreadyExistsError",
    "ApiKey",
    "ApiRateLimit",
    "ApprovalStep",
    "AsyncClient",
    "AsyncRunContext",
    "AttemptRecord",
    "BudgetAction",
    "CircuitState",
    "Client",
    "ClientConfig",
    "ConcurrencyStrategy",
    "CreatedApiKey",
    "CronOverlapPolicy",
    "DeadlineExceededError",
    "DurationPercentiles",
    "EndpointCircuit",
    "Event",
    "ExecutionMode",
    "FailedPreconditionError",
    "FeedEvent",
    "InternalError",
    "InvalidArgumentError",
    "Job",
    "JobRetryPolicy",
    "JobRunQueue",
    "JobStep",
    "Keepalive",
    "MapCounts",
    "MapProgress",
    "MapSpec",
    "NonRetryableError",
    "NotFoundError",
    "OnFailure",
    "PermissionDeniedError",
    "Project",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RetryStrategy",
    "Run",
    "RunContext",
    "RunEvent",
    "RunOptions",
    "RunStats",
    "RunStatsBucket",
    "RunStatus",
    "SentEvent",
    "SkipReason",
    "SleepStep",
    "Step",
    "StepRetryPolicy",
    "StepRun",
    "StepRunStatus",
    "StraitError",
    "SubWorkflowStep",
    "TaskContext",
    "TlsConfig",
    "TriggerRule",
    "TriggeredRun",
    "TriggeredWorkflowRun",
    "UnauthenticatedError",
    "UnavailableError",
    "WaitForEventStep",
    "Worker",
    "Workflow",
    "WorkflowConcurrency",
    "WorkflowRun",
    "WorkflowRunChange",
    "WorkflowRunEvent",
    "WorkflowRunGraph",
    "WorkflowRunGraphEdge",
    "WorkflowRunGraphNode",
    "WorkflowRunSnapshot",
    "WorkflowRunStatus",
    "WorkflowVersion",
    "__version__",
    "is_terminal",
]


def test_all_is_pinned() -> None:
    assert strait_client.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(strait_client, name) is not None


def test_error_classes_share_the_base() -> None:
    # NonRetryableError is raised by a worker's handler, not by the API.
    errors = [getattr(strait_client, n) for n in EXPECTED
              if n.endswith("Error") and n not in ("StraitError", "NonRetryableError")]
    assert errors and all(issubclass(e, StraitError) for e in errors)
    err = strait_client.NotFoundError(grpc.StatusCode.NOT_FOUND, "run 'x' not found")
    assert (err.code, err.message, err.reason, err.field_violations, err.retry_delay) == (
        grpc.StatusCode.NOT_FOUND, "run 'x' not found", "", [], None)
    assert str(err) == "NOT_FOUND: run 'x' not found"


def test_terminal_statuses() -> None:
    assert strait_client.TERMINAL_STATUSES == {
        "completed", "failed", "timed_out", "crashed", "system_failed", "canceled", "expired", "dead_letter"}
    assert strait_client.is_terminal("dead_letter") and not strait_client.is_terminal("queued")
    status = strait_client.RunStatus
    assert all(isinstance(s, status) for s in strait_client.TERMINAL_STATUSES)
    assert strait_client.is_terminal(status.DEAD_LETTER) and not strait_client.is_terminal(None)
    assert status.COMPLETED.is_terminal and not status.EXECUTING.is_terminal
    assert status.COMPLETED == "completed" and f"{status.TIMED_OUT}" == "timed_out" and status("canceled").is_terminal
