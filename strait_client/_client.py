"""The synchronous client."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import grpc

from strait_client import _tracing
from strait_client._jobs import Jobs
from strait_client._projects import Projects
from strait_client._retry import RetryPolicy
from strait_client._runs import Runs
from strait_client._schedules import Schedules
from strait_client._transport import Transport, auth_metadata

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

DEFAULT_RETRY = RetryPolicy()

DEFAULT_ADDRESS = "127.0.0.1:50051"
USER_AGENT = "strait-python"


def channel_options() -> list[tuple[str, Any]]:
    return [("grpc.primary_user_agent", USER_AGENT)]


def env_settings() -> tuple[str, str]:
    """(address, api_key) from STRAIT_ADDRESS and STRAIT_API_KEY."""
    return os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS, os.environ.get("STRAIT_API_KEY", "")


class Client:
    """Synchronous Strait client. Every call sends the API key and uses `timeout` seconds as its deadline;
    failures raise StraitError subclasses. Use as a context manager or call close().

    Results are typed: `jobs` calls return Job, `runs` calls Run/TriggeredRun/RunEvent, `projects` calls
    Project/ApiKey (see strait_client's module docstring).

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
        provider = tracer_provider or _tracing.env_tracer_provider()  # a bad OTEL_* setting raises before it too
        if credentials is None:
            channel = grpc.insecure_channel(address, options=channel_options())
        else:
            channel = grpc.secure_channel(address, credentials, options=channel_options())
        if provider is not None:
            channel = _tracing.traced_channel(channel, provider)
        self._transport = Transport(channel, api_key, timeout, retry)
        self.jobs = Jobs(self._transport)
        self.runs = Runs(self._transport, self.jobs)
        self.projects = Projects(self._transport)
        self.schedules = Schedules(self._transport)

    @classmethod
    def from_env(cls, *, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None) -> Self:
        """A client for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY."""
        address, api_key = env_settings()
        return cls(address, api_key, timeout=timeout, credentials=credentials)

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
