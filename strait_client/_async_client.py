"""The asyncio client (grpc.aio). Same calls as Client, awaited; list() and watch methods are async iterators."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

import grpc

from strait_client import _tracing
from strait_client._client import DEFAULT_RETRY, channel_options, env_settings
from strait_client._jobs import AsyncJobs
from strait_client._projects import AsyncProjects
from strait_client._retry import RetryPolicy
from strait_client._runs import AsyncRuns
from strait_client._schedules import AsyncSchedules
from strait_client._transport import AsyncTransport, auth_metadata

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


class AsyncClient:
    """asyncio Strait client on grpc.aio. Every call sends the API key and uses `timeout` seconds as its
    deadline; failures raise StraitError subclasses. Use `async with` or await close().

    Results are typed as Client's are.

    Calls safe to repeat are retried when the server answers UNAVAILABLE, as `retry` (a RetryPolicy) says:
    reads, and triggers, each of which carries a fresh request id that its retries reuse, so that a retry
    after a lost answer returns the runs the first attempt created instead of creating them again.

    Calls are traced with OpenTelemetry (a client span each, its context sent to the server) when
    `tracer_provider` is given, or when the OTEL_* variables turn tracing on (docs/metrics-and-tracing.md)."""

    def __init__(self, address: str, api_key: str, *, timeout: float = 30.0,
                 credentials: grpc.ChannelCredentials | None = None,
                 tracer_provider: TracerProvider | None = None, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.address = address
        self.timeout = timeout
        auth_metadata(api_key)  # refuse an empty key before opening a channel
        provider = tracer_provider or _tracing.env_tracer_provider()
        interceptors = _tracing.aio_interceptors(provider) if provider is not None else None
        if credentials is None:
            channel = grpc.aio.insecure_channel(address, options=channel_options(), interceptors=interceptors)
        else:
            channel = grpc.aio.secure_channel(address, credentials, options=channel_options(),
                                              interceptors=interceptors)
        self._transport = AsyncTransport(channel, api_key, timeout, retry)
        self.jobs = AsyncJobs(self._transport)
        self.runs = AsyncRuns(self._transport, self.jobs)
        self.projects = AsyncProjects(self._transport)
        self.schedules = AsyncSchedules(self._transport)

    @classmethod
    def from_env(cls, *, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None) -> Self:
        """A client for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY."""
        address, api_key = env_settings()
        return cls(address, api_key, timeout=timeout, credentials=credentials)

    async def close(self) -> None:
        """Closes the channel; calls in progress are canceled."""
        await self._transport.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
