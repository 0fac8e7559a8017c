"""Python client for Strait: `Client` (sync) and `AsyncClient` (asyncio) over gRPC.

Results are plain dicts: JSON fields decoded (`payload`, `output`), statuses as lower-case strings,
timestamps as aware UTC datetimes and durations as timedeltas. Failed calls raise StraitError subclasses.
The generated protobuf modules live in strait_client.v1.
"""

from __future__ import annotations

from strait_client._async_client import AsyncClient
from strait_client._client import Client
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
from strait_client._ops import TERMINAL_STATUSES, RunOptions, is_terminal
from strait_client._retry import RetryPolicy
from strait_client._run_context import AsyncRunContext, RunContext

__all__ = [
    "TERMINAL_STATUSES",
    "AbortedError",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncRunContext",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RunContext",
    "RunOptions",
    "StraitError",
    "UnauthenticatedError",
    "UnavailableError",
    "is_terminal",
]
