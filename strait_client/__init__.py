"""Python client for Strait: `Client` (sync) and `AsyncClient` (asyncio) over gRPC.

Results are frozen dataclasses: Job, Run (TriggeredRun from triggers and replays, with `idempotent_repeat`,
`deduplicated` and `debounced`), AttemptRecord, RunEvent (FeedEvent from `runs.watch_all`, with
`resume_token`), Project, ApiKey (CreatedApiKey, with its `secret`), EndpointCircuit, Workflow,
WorkflowVersion, WorkflowRun (TriggeredWorkflowRun from `workflows.trigger`, with `idempotent_repeat`), StepRun,
WorkflowRunEvent (WorkflowRunChange from `workflow_runs.watch_all`, with its workflow and `resume_token`),
WorkflowRunGraph (with WorkflowRunGraphNode and WorkflowRunGraphEdge), Event (SentEvent from
`events.send`, with `matched_steps` and `idempotent_repeat`) and RunStats (from `runs.stats`, with RunStatsBucket,
DurationPercentiles and JobRunQueue). Their fields are named as in the API, with the
JSON fields decoded (`payload`, `output`, `data`, `input_template`, `input`); enums are StrEnum members that
equal their lower-case names (`RunStatus.COMPLETED == "completed"`); timestamps are aware UTC datetimes and
durations timedeltas. Workflow steps are built from Step and its kind specs (JobStep, ApprovalStep,
WaitForEventStep, SleepStep, SubWorkflowStep; MapSpec, StepRetryPolicy) and read back as the same types.
ClientConfig (with Keepalive and TlsConfig) gathers a client's settings: timeout, retries, keepalive pings, TLS,
channel options and interceptors. Failed calls raise StraitError subclasses. The generated protobuf modules live in
strait_client.v1.
"""

from __future__ import annotations

from strait_client._admin_models import ApiKey, ApiRateLimit, CreatedApiKey, EndpointCircuit, Project
from strait_client._async_client import AsyncClient
from strait_client._async_run_context import AsyncRunContext
from strait_client._client import Client
from strait_client._config import ClientConfig, Keepalive
from strait_client._enums import (
    TERMINAL_STATUSES,
    BudgetAction,
    CircuitState,
    ConcurrencyStrategy,
    CronOverlapPolicy,
    ExecutionMode,
    OnFailure,
    RetryStrategy,
    RunStatus,
    SkipReason,
    StepRunStatus,
    TriggerRule,
    WorkflowRunStatus,
    is_terminal,
)
from strait_client._errors import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StraitError,
    UnauthenticatedError,
    UnavailableError,
)
from strait_client._event_models import Event, SentEvent
from strait_client._models import AttemptRecord, FeedEvent, Job, JobRetryPolicy, Run, RunEvent, TriggeredRun
from strait_client._ops import RunOptions
from strait_client._retry import RetryPolicy
from strait_client._run_context import RunContext
from strait_client._run_stats_models import DurationPercentiles, JobRunQueue, RunStats, RunStatsBucket
from strait_client._steps import (
    ApprovalStep,
    JobStep,
    MapSpec,
    SleepStep,
    Step,
    StepRetryPolicy,
    SubWorkflowStep,
    WaitForEventStep,
)
from strait_client._tls import TlsConfig
from strait_client._version import distribution_version
from strait_client._workflow_models import Workflow, WorkflowConcurrency, WorkflowVersion
from strait_client._workflow_run_models import (
    MapCounts,
    MapProgress,
    StepRun,
    TriggeredWorkflowRun,
    WorkflowRun,
    WorkflowRunChange,
    WorkflowRunEvent,
    WorkflowRunGraph,
    WorkflowRunGraphEdge,
    WorkflowRunGraphNode,
    WorkflowRunSnapshot,
)
from strait_client.worker import NonRetryableError, TaskContext, Worker

__version__ = distribution_version()
"""The version of the installed `strait` distribution."""

__all__ = [
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
