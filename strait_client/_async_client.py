"""The asyncio client (grpc.aio). Same calls as Client, awaited; list() and watch methods are async iterators."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

import grpc

from strait_client import _tracing
from strait_client._circuits import AsyncCircuits
from strait_client._config import (
    ClientConfig,
    ClientOptions,
    Keepalive,
    Timeout,
    env_settings,
    open_aio_channel,
    resolve,
    with_env_tls,
)
from strait_client._events import AsyncEvents
from strait_client._jobs import AsyncJobs
from strait_client._projects import AsyncProjects
from strait_client._retry import RetryPolicy
from strait_client._runs import AsyncRuns
from strait_client._schedules import AsyncSchedules
from strait_client._tls import TlsConfig
from strait_client._transport import AsyncTransport, auth_metadata
from strait_client._workflow_runs import AsyncWorkflowRuns
from strait_client._workflows import AsyncWorkflows

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


class AsyncClient:
    """asyncio Strait client on grpc.aio: the calls of Client, awaited. Use `async with` or await close().

    Args:
        address: The server's HOST:PORT.
        api_key: The API key ("strait_...") sent with every call.
        config: Timeout, retry, keepalive, TLS, channel options and interceptors together (default ClientConfig());
            the keyword arguments below, when given, override its fields.
        timeout: Each call's deadline, retries included: seconds or a timedelta (default 30 s).
        retry: When calls safe to repeat are retried (RetryPolicy(max_attempts=1): never).
        keepalive: Keepalive pings on the connection (see Keepalive).
        tls: TLS on the connection (see TlsConfig): trusted authorities, a client certificate, the server's name.
        channel_options: Extra gRPC channel options.
        interceptors: grpc.aio.UnaryUnaryClientInterceptor (and the other grpc.aio.*ClientInterceptor kinds),
            first one outermost.
        credentials: gRPC channel credentials, used instead of `tls` (e.g. grpc.ssl_channel_credentials());
            None: those of `tls`, else plaintext.
        tracer_provider: The OpenTelemetry TracerProvider to trace calls with (see Client).

    Raises:
        ValueError: `api_key` is empty, a timeout is not positive, an interceptor is not a grpc.aio one, or a
            file of `tls` cannot be read or holds no valid PEM.
    """

    def __init__(self, address: str, api_key: str, *, config: ClientConfig | None = None,
                 timeout: Timeout | None = None, retry: RetryPolicy | None = None, keepalive: Keepalive | None = None,
                 tls: TlsConfig | None = None,
                 channel_options: Sequence[tuple[str, Any]] | None = None, interceptors: Sequence[Any] | None = None,
                 credentials: grpc.ChannelCredentials | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.address = address
        self.config = resolve(config, timeout=timeout, retry=retry, keepalive=keepalive, tls=tls,
                              channel_options=channel_options, interceptors=interceptors)
        self.timeout = self.config.timeout_seconds
        """The calls' deadline in seconds."""
        auth_metadata(api_key)  # refuse an empty key before opening a channel
        provider = tracer_provider or _tracing.env_tracer_provider()
        channel = open_aio_channel(address, self.config, credentials, provider)
        self._transport = AsyncTransport(channel, api_key, self.timeout, self.config.retry)
        self._jobs = AsyncJobs(self._transport)
        self._runs = AsyncRuns(self._transport, self._jobs)
        self._projects = AsyncProjects(self._transport)
        self._schedules = AsyncSchedules(self._transport)
        self._circuits = AsyncCircuits(self._transport)
        self._workflows = AsyncWorkflows(self._transport)
        self._workflow_runs = AsyncWorkflowRuns(self._transport, self._workflows)
        self._events = AsyncEvents(self._transport)

    @property
    def jobs(self) -> AsyncJobs:
        """Jobs: create, get, list, update and delete them; trigger runs (one or a batch)."""
        return self._jobs

    @property
    def runs(self) -> AsyncRuns:
        """Runs: get, list, cancel, replay, reset and wait for them; watch one run or the project feed."""
        return self._runs

    @property
    def projects(self) -> AsyncProjects:
        """Projects and their API keys (needs the admin key)."""
        return self._projects

    @property
    def schedules(self) -> AsyncSchedules:
        """Cron schedules of jobs and workflows."""
        return self._schedules

    @property
    def circuits(self) -> AsyncCircuits:
        """Endpoint circuit breakers: list and reset them."""
        return self._circuits

    @property
    def workflows(self) -> AsyncWorkflows:
        """Workflow definitions and their versions; trigger workflow runs."""
        return self._workflows

    @property
    def workflow_runs(self) -> AsyncWorkflowRuns:
        """Workflow runs: get, list, cancel, pause, resume, retry and skip steps, approve, watch, wait."""
        return self._workflow_runs

    @property
    def events(self) -> AsyncEvents:
        """Events that resolve wait_for_event steps."""
        return self._events

    @classmethod
    def from_env(cls, **options: Unpack[ClientOptions]) -> Self:
        """A client for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY, over TLS when the
        STRAIT_TLS* variables ask for it (see TlsConfig.from_env) and the options choose no TLS of their own.

        Args:
            **options: The keyword arguments of AsyncClient.

        Returns:
            The client.

        Raises:
            ValueError: STRAIT_API_KEY is not set, a STRAIT_TLS* variable is malformed, or a TLS file cannot be
                read or holds no valid PEM.
        """
        address, api_key = env_settings()
        return cls(address, api_key, **with_env_tls(options))

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
