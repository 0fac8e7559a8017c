"""The synchronous client."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

import grpc

from strait_client import _tracing
from strait_client._circuits import Circuits
from strait_client._config import (
    ClientConfig,
    ClientOptions,
    Keepalive,
    Timeout,
    env_settings,
    open_channel,
    resolve,
    with_env_tls,
)
from strait_client._events import Events
from strait_client._jobs import Jobs
from strait_client._projects import Projects
from strait_client._retry import RetryPolicy
from strait_client._runs import Runs
from strait_client._schedules import Schedules
from strait_client._tls import TlsConfig
from strait_client._transport import Transport, auth_metadata
from strait_client._workflow_runs import WorkflowRuns
from strait_client._workflows import Workflows

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


class Client:
    """Synchronous Strait client: `client.jobs`, `.runs`, `.schedules`, `.projects`, `.circuits`,
    `.workflows`, `.workflow_runs` and `.events`.

    Every call sends the API key and has the configured timeout as its deadline; failures raise StraitError
    subclasses. Results are typed (Job, Run, RunEvent, Project, Workflow...). Use as a context manager or call
    close().

    Calls safe to repeat are retried when the server answers UNAVAILABLE, as the RetryPolicy says: reads, and
    triggers, each of which carries a fresh request id that its retries reuse, so that a retry after a lost
    answer returns the runs the first attempt created instead of creating them again; and events sent with an
    idempotency key.

    Calls are traced with OpenTelemetry (a client span each, its context sent to the server) when
    `tracer_provider` is given, or when the OTEL_* variables turn tracing on (docs/metrics-and-tracing.md).

    Args:
        address: The server's HOST:PORT.
        api_key: The API key ("strait_...") sent with every call.
        config: Timeout, retry, keepalive, TLS, channel options and interceptors together (default ClientConfig());
            the keyword arguments below, when given, override its fields.
        timeout: Each call's deadline, retries included: seconds or a timedelta (default 30 s).
        retry: When calls safe to repeat are retried (RetryPolicy(max_attempts=1): never).
        keepalive: Keepalive pings on the connection (see Keepalive).
        tls: TLS on the connection (see TlsConfig): trusted authorities, a client certificate, the server's name.
        channel_options: Extra gRPC channel options, e.g. [("grpc.max_receive_message_length", 16 << 20)].
        interceptors: grpc.UnaryUnaryClientInterceptor (and the other grpc.*ClientInterceptor kinds), first
            one outermost.
        credentials: gRPC channel credentials, used instead of `tls` (e.g. grpc.ssl_channel_credentials());
            None: those of `tls`, else plaintext.
        tracer_provider: The OpenTelemetry TracerProvider to trace calls with.

    Raises:
        ValueError: `api_key` is empty, a timeout is not positive, or a file of `tls` cannot be read or holds no
            valid PEM.
        TypeError: An interceptor is not a gRPC client interceptor.
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
        provider = tracer_provider or _tracing.env_tracer_provider()  # a bad OTEL_* setting raises before it too
        channel = open_channel(address, self.config, credentials, provider)
        self._transport = Transport(channel, api_key, self.timeout, self.config.retry)
        self._jobs = Jobs(self._transport)
        self._runs = Runs(self._transport, self._jobs)
        self._projects = Projects(self._transport)
        self._schedules = Schedules(self._transport)
        self._circuits = Circuits(self._transport)
        self._workflows = Workflows(self._transport)
        self._workflow_runs = WorkflowRuns(self._transport, self._workflows)
        self._events = Events(self._transport)

    @property
    def jobs(self) -> Jobs:
        """Jobs: create, get, list, update and delete them; trigger runs (one or a batch)."""
        return self._jobs

    @property
    def runs(self) -> Runs:
        """Runs: get, list, cancel, replay, reset and wait for them; watch one run or the project feed."""
        return self._runs

    @property
    def projects(self) -> Projects:
        """Projects and their API keys (needs the admin key)."""
        return self._projects

    @property
    def schedules(self) -> Schedules:
        """Cron schedules of jobs and workflows."""
        return self._schedules

    @property
    def circuits(self) -> Circuits:
        """Endpoint circuit breakers: list and reset them."""
        return self._circuits

    @property
    def workflows(self) -> Workflows:
        """Workflow definitions and their versions; trigger workflow runs."""
        return self._workflows

    @property
    def workflow_runs(self) -> WorkflowRuns:
        """Workflow runs: get, list, cancel, pause, resume, retry and skip steps, approve, watch, wait."""
        return self._workflow_runs

    @property
    def events(self) -> Events:
        """Events that resolve wait_for_event steps."""
        return self._events

    @classmethod
    def from_env(cls, **options: Unpack[ClientOptions]) -> Self:
        """A client for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY, over TLS when the
        STRAIT_TLS* variables ask for it (see TlsConfig.from_env) and the options choose no TLS of their own.

        Args:
            **options: The keyword arguments of Client (config, timeout, retry, keepalive, channel_options,
                interceptors, credentials, tracer_provider).

        Returns:
            The client.

        Raises:
            ValueError: STRAIT_API_KEY is not set, a STRAIT_TLS* variable is malformed, or a TLS file cannot be
                read or holds no valid PEM.
        """
        address, api_key = env_settings()
        return cls(address, api_key, **with_env_tls(options))

    def close(self) -> None:
        """Closes the channel; calls in progress are canceled."""
        self._transport.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
