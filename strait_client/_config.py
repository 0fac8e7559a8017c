"""How a client connects and calls: ClientConfig (timeout, retries, keepalive, TLS, channel options,
interceptors), shared by Client and AsyncClient, and the channels it opens."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

import grpc

from strait_client import _tracing
from strait_client._retry import RetryPolicy
from strait_client._tls import TlsConfig

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

Timeout: TypeAlias = float | timedelta
"""A duration: seconds (int or float) or a timedelta."""

DEFAULT_ADDRESS = "127.0.0.1:50051"
USER_AGENT = "strait-python"
DEFAULT_RETRY = RetryPolicy()


def seconds(value: Timeout) -> float:
    """A Timeout in seconds; ValueError unless it is positive."""
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise TypeError(f"a timeout is seconds or a timedelta, not {type(value).__name__}")
    out = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not out > 0:
        raise ValueError(f"a timeout must be positive, got {value!r}")
    return out


def _ms(value: timedelta) -> int:
    return int(value / timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive pings on the client's connection, to notice a dead connection (or keep a proxy from
    closing an idle one) before a call or a watch waits on it.

    Args:
        time: How long the connection may be idle before a ping (grpc.keepalive_time_ms). The Strait server
            refuses pings more often than every 10 s and then closes the connection (too_many_pings): keep it
            at 10 s or more.
        timeout: How long to wait for the ping's answer before the connection is closed
            (grpc.keepalive_timeout_ms).
        without_calls: Ping also while no call is open (grpc.keepalive_permit_without_calls).
    """

    time: timedelta = timedelta(seconds=30)
    timeout: timedelta = timedelta(seconds=10)
    without_calls: bool = False

    def __post_init__(self) -> None:
        if self.time <= timedelta(0) or self.timeout <= timedelta(0):
            raise ValueError("keepalive time and timeout must be positive")

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC channel options these settings stand for.

        Returns:
            (name, value) pairs for grpc.keepalive_time_ms, keepalive_timeout_ms, http2.ping_timeout_ms,
            keepalive_permit_without_calls and http2.max_pings_without_data.
        """
        # Without max_pings_without_data 0, gRPC stops pinging after two pings on a connection that sends
        # nothing (a quiet stream), and a dead connection then goes unnoticed for good; and it waits for a
        # ping's answer for ping_timeout_ms (1 minute), whatever keepalive_timeout_ms says.
        return [("grpc.keepalive_time_ms", _ms(self.time)), ("grpc.keepalive_timeout_ms", _ms(self.timeout)),
                ("grpc.http2.ping_timeout_ms", _ms(self.timeout)),
                ("grpc.keepalive_permit_without_calls", int(self.without_calls)),
                ("grpc.http2.max_pings_without_data", 0)]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Settings of a Client or AsyncClient; one config can serve both (except `interceptors`, see below).

    Args:
        timeout: The deadline of each call (its retries included): seconds or a timedelta. Default 30 s.
        retry: When calls safe to repeat are retried after UNAVAILABLE (RetryPolicy(max_attempts=1): never).
        keepalive: Keepalive pings on the connection; None: gRPC's defaults (no pings from the client).
        tls: TLS on the connection (see TlsConfig); None: plaintext, unless `credentials` are given to the client.
        channel_options: Extra gRPC channel options, e.g. ("grpc.max_receive_message_length", 16 << 20),
            applied after the client's own (so they win).
        interceptors: Client interceptors, first one outermost. A Client takes grpc.UnaryUnaryClientInterceptor
            and the other grpc.*ClientInterceptor kinds (applied with grpc.intercept_channel); an AsyncClient
            takes grpc.aio.*ClientInterceptor ones (grpc.aio files an object under the first kind it implements,
            unary-unary first: pass one object per kind). Tracing, when on, runs outside them.
    """

    timeout: Timeout = 30.0
    retry: RetryPolicy = DEFAULT_RETRY
    keepalive: Keepalive | None = None
    tls: TlsConfig | None = None
    channel_options: Sequence[tuple[str, Any]] = ()
    interceptors: Sequence[Any] = ()

    def __post_init__(self) -> None:
        seconds(self.timeout)  # refuse a bad timeout here rather than at the first call

    @property
    def timeout_seconds(self) -> float:
        """`timeout` in seconds."""
        return seconds(self.timeout)

    def grpc_options(self) -> list[tuple[str, Any]]:
        """Every channel option a client opens its channel with.

        Returns:
            (name, value) pairs: the user agent, the keepalive and TLS options, then `channel_options`.
        """
        options: list[tuple[str, Any]] = [("grpc.primary_user_agent", USER_AGENT)]
        if self.keepalive is not None:
            options.extend(self.keepalive.channel_options())
        if self.tls is not None:
            options.extend(self.tls.channel_options())
        options.extend(self.channel_options)
        return options


class ClientOptions(TypedDict, total=False):
    """The keyword arguments Client and AsyncClient take besides the address and key."""

    config: ClientConfig | None
    timeout: Timeout | None
    retry: RetryPolicy | None
    keepalive: Keepalive | None
    tls: TlsConfig | None
    channel_options: Sequence[tuple[str, Any]] | None
    interceptors: Sequence[Any] | None
    credentials: grpc.ChannelCredentials | None
    tracer_provider: TracerProvider | None


def resolve(config: ClientConfig | None, **overrides: Any) -> ClientConfig:
    """`config` (default ClientConfig()) with the keyword arguments that are not None put over it."""
    given = {name: value for name, value in overrides.items() if value is not None}
    config = config or ClientConfig()
    return dataclasses.replace(config, **given) if given else config


def env_settings() -> tuple[str, str]:
    """(address, api_key) from STRAIT_ADDRESS and STRAIT_API_KEY."""
    return os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS, os.environ.get("STRAIT_API_KEY", "")


def with_env_tls(options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a from_env(), with `config` given TLS from the STRAIT_TLS* variables unless the
    caller chose TLS already (`tls`, `credentials`, or a config with tls)."""
    config: ClientConfig | None = options.get("config")
    if options.get("tls") is not None or options.get("credentials") is not None or (config and config.tls):
        return dict(options)
    tls = TlsConfig.from_env()
    return {**options, "config": dataclasses.replace(config or ClientConfig(), tls=tls)} if tls else dict(options)


def env_credentials(credentials: grpc.ChannelCredentials | None,
                    ) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """(credentials, channel options) of a channel opened with only an address: the given credentials, else TLS
    as the STRAIT_TLS* variables say (files read now), else (None, []) for plaintext."""
    if credentials is not None:
        return credentials, []
    tls = TlsConfig.from_env()
    return (tls.credentials(), tls.channel_options()) if tls is not None else (None, [])


def channel_credentials(config: ClientConfig,
                        credentials: grpc.ChannelCredentials | None) -> grpc.ChannelCredentials | None:
    """The given credentials, else those of the config's TLS settings (their files read now), else None."""
    if credentials is not None or config.tls is None:
        return credentials
    return config.tls.credentials()


def open_channel(address: str, config: ClientConfig, credentials: grpc.ChannelCredentials | None,
                 provider: TracerProvider | None) -> grpc.Channel:
    """The blocking channel of a Client: the config's options and interceptors, and tracing outside them."""
    options = config.grpc_options()
    credentials = channel_credentials(config, credentials)
    channel = (grpc.insecure_channel(address, options=options) if credentials is None
               else grpc.secure_channel(address, credentials, options=options))
    if config.interceptors:
        channel = grpc.intercept_channel(channel, *config.interceptors)
    return _tracing.traced_channel(channel, provider) if provider is not None else channel


def open_aio_channel(address: str, config: ClientConfig, credentials: grpc.ChannelCredentials | None,
                     provider: TracerProvider | None) -> grpc.aio.Channel:
    """The grpc.aio channel of an AsyncClient: the config's options and interceptors, tracing outside them."""
    interceptors = [*(_tracing.aio_interceptors(provider) if provider is not None else ()), *config.interceptors]
    options = config.grpc_options()
    credentials = channel_credentials(config, credentials)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors or None)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors or None)
