"""OpenTelemetry tracing, shared by the client and the server: off unless the standard OTEL_* variables ask
for traces.

Tracing is on when OTEL_TRACES_EXPORTER names an exporter other than `none`, or (OTEL_TRACES_EXPORTER unset)
when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true turns
it off. Everything else (service name and resource, sampler, batch processor, exporter endpoint, headers and
protocol, propagators) is read by opentelemetry-sdk and the exporters from their own variables.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

_EXPORTER_GROUP = "opentelemetry_traces_exporter"
# How opentelemetry-sdk maps the generic name "otlp" to an installed exporter, by OTLP protocol.
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}

_shared_lock = threading.Lock()
_shared: TracerProvider | None = None


class TracingConfigError(ValueError):
    """An OTEL_* variable asks for something that is not installed or not valid."""


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def exporter_names(env: Mapping[str, str] | None = None) -> list[str]:
    """Entry-point names of the span exporters the environment asks for; empty when tracing is off."""
    env = os.environ if env is None else env
    if _true(env.get("OTEL_SDK_DISABLED", "")):
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if raw:
        names = [n.strip() for n in raw.split(",") if n.strip() and n.strip().lower() != "none"]
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        names = ["otlp"]  # an endpoint alone means "export there", as the spec's default exporter
    else:
        return []
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc").strip()
    out = []
    for name in names:
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r}")
            name = _OTLP_BY_PROTOCOL[protocol]
        out.append(name)
    return out


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    return bool(exporter_names(env))


def provider_from_env(env: Mapping[str, str] | None = None, *, service_name: str = "") -> TracerProvider:
    """An SDK tracer provider exporting to the exporters the environment names, through batch processors.

    `service_name` applies only when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if env is None else env
    attributes: dict[str, Any] = {}
    if service_name and not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = service_name
    # Sampler (OTEL_TRACES_SAMPLER), span limits and the rest of the resource come from the environment.
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    for name in exporter_names(env):
        found = list(entry_points(group=_EXPORTER_GROUP, name=name))
        if not found:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed "
                "(console and otlp over gRPC are; others need their opentelemetry-exporter package)")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider


def env_tracer_provider() -> TracerProvider | None:
    """For the client: None when tracing is off; else the application's global SDK provider if it set one,
    or one provider built from the environment, shared by every client of the process."""
    global _shared
    if not tracing_enabled():
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise TracingConfigError(
            "OTEL_* variables turn tracing on, but OpenTelemetry is not installed: pip install 'strait[tracing]'"
        ) from None

    configured = trace.get_tracer_provider()
    if not isinstance(configured, trace.ProxyTracerProvider):
        return configured
    with _shared_lock:
        if _shared is None:
            _shared = provider_from_env()
        return _shared


def _not_server_streaming(call_info: Any) -> bool:
    return not getattr(call_info, "is_server_stream", False)


def traced_channel(channel: Any, provider: TracerProvider) -> Any:
    """A sync channel whose unary calls are traced, through the instrumentation's own channel wrapper (its
    interceptor is not a grpc.*ClientInterceptor, so grpc.intercept_channel refuses it).

    Server-streaming calls (WatchRun, WatchRuns) are left alone: the sync instrumentation turns their call
    object into a bare generator, without cancel() or trailing_metadata(), which watching needs."""
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    interceptor = client_interceptor(tracer_provider=provider, filter_=_not_server_streaming)  # type: ignore[no-untyped-call]
    return intercept_channel(channel, interceptor)  # type: ignore[no-untyped-call]


def aio_interceptors(provider: TracerProvider) -> list[Any]:
    """Interceptors tracing the unary calls of a grpc.aio channel. Server-streaming calls are left alone as
    in the sync client: the instrumentation ends their span only when its wrapping generator is closed,
    which a watch that stops at its run's last event and cancels the call never does."""
    import grpc
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return [i for i in aio_client_interceptors(tracer_provider=provider)  # type: ignore[no-untyped-call]
            if not isinstance(i, grpc.aio.UnaryStreamClientInterceptor | grpc.aio.StreamStreamClientInterceptor)]
