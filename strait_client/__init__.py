"""Python client for Strait: `Client` (sync) and `AsyncClient` (asyncio) over gRPC.

Results are frozen dataclasses: Job, Run (TriggeredRun from triggers and replays, with `idempotent_repeat`,
`deduplicated` and `debounced`), AttemptRecord, RunEvent (FeedEvent from `runs.watch_all`, with
`resume_token`), Project, ApiKey (CreatedApiKey, with its `secret`) and EndpointCircuit. Their fields are
named as in the API, with the JSON fields decoded (`payload`, `output`, `data`); enums are StrEnum members
that equal their lower-case names (`RunStatus.COMPLETED == "completed"`); timestamps are aware UTC datetimes
and durations timedeltas. ClientConfig (and Keepalive) gathers a client's settings: timeout, retries,
keepalive pings, channel options and interceptors. Failed calls raise StraitError subclasses. The generated
protobuf modules live in strait_client.v1.
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
    CronOverlapPolicy,
    ExecutionMode,
    RetryStrategy,
    RunStatus,
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
from strait_client._models import AttemptRecord, FeedEvent, Job, JobRetryPolicy, Run, RunEvent, TriggeredRun
from strait_client._ops import RunOptions
from strait_client._retry import RetryPolicy
from strait_client._run_context import RunContext

__all__ = [
    "TERMINAL_STATUSES",
    "AbortedError",
    "AlreadyExistsError",
    "ApiKey",
    "ApiRateLimit",
    "AsyncClient",
    "AsyncRunContext",
    "AttemptRecord",
    "BudgetAction",
    "CircuitState",
    "Client",
    "ClientConfig",
    "CreatedApiKey",
    "CronOverlapPolicy",
    "DeadlineExceededError",
    "EndpointCircuit",
    "ExecutionMode",
    "FailedPreconditionError",
    "FeedEvent",
    "InternalError",
    "InvalidArgumentError",
    "Job",
    "JobRetryPolicy",
    "Keepalive",
    "NotFoundError",
    "PermissionDeniedError",
    "Project",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RetryStrategy",
    "Run",
    "RunContext",
    "RunEvent",
    "RunOptions",
    "RunStatus",
    "StraitError",
    "TriggeredRun",
    "UnauthenticatedError",
    "UnavailableError",
    "is_terminal",
]
