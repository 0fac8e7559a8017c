"""Prometheus metrics and OpenTelemetry tracing for one server process (see docs/metrics-and-tracing.md).

Every component gets the App's Telemetry: the metrics always count (a counter or histogram update costs
about a microsecond), and are served only when STRAIT_METRICS_ADDRESS is set; tracing is on only with a
tracer provider (from the OTEL_* variables, or given by a test).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from strait_client import _tracing
from strait_server.config import ConfigError
from strait_server.telemetry.metrics import OUTCOME_LABELS, Metrics
from strait_server.telemetry.rpc import MetricsInterceptor
from strait_server.telemetry.tracing import RunTracing

if TYPE_CHECKING:
    from strait_server.queue import ClaimedRun, Outcome

__all__ = ["Metrics", "RunTracing", "Telemetry", "server_tracer_provider"]


class Telemetry:
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.metrics = Metrics()
        self.tracer_provider = tracer_provider
        self.tracing = RunTracing(tracer_provider)

    def claimed(self, runs: list[ClaimedRun], started_ns: int) -> None:
        """After one claim pass of the dispatcher (flow-controlled and plain claims together)."""
        ended_ns = time.time_ns()
        self.metrics.claim_duration.observe((ended_ns - started_ns) / 1e9)
        self.metrics.transition("queued", "executing", len(runs))
        self.tracing.claimed(runs, started_ns, ended_ns)

    def dispatched(self, run: ClaimedRun, outcome: Outcome, seconds: float, span: trace.Span | None) -> None:
        label = OUTCOME_LABELS.get(outcome.to_status, outcome.to_status.value)
        self.metrics.dispatch_duration.labels(run.job_id, label).observe(seconds)
        self.tracing.dispatched(span, outcome, label)

    def server_interceptors(self, *, metrics: bool = True) -> list[Any]:
        """Outermost first: metrics see every call's final status; the tracing interceptor makes the server
        span current for the guard and the servicer. Without a metrics endpoint nobody reads the gRPC
        counters, so their interceptor is left out (it costs every call a little)."""
        interceptors: list[Any] = []
        if metrics:
            # Tracing wraps each call with that call's details: the chain's handlers can only be reused
            # per method without it.
            interceptors.append(MetricsInterceptor(self.metrics, reuse_handlers=self.tracer_provider is None))
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

            # Health checks and reflection would only add noise to traces.
            noise = filters.any_of(filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection."))
            interceptors.append(aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=self.tracer_provider, filter_=filters.negate(noise)))
        return interceptors


def server_tracer_provider() -> trace.TracerProvider | None:
    """The server's tracer provider when the OTEL_* variables turn tracing on: the global SDK provider if
    something (opentelemetry-instrument) set one, else one built from the environment (service name
    `strait` unless OTEL_SERVICE_NAME says otherwise)."""
    try:
        if not _tracing.tracing_enabled():
            return None
        configured = trace.get_tracer_provider()
        if not isinstance(configured, trace.ProxyTracerProvider):
            return configured
        return _tracing.provider_from_env(service_name="strait")
    except _tracing.TracingConfigError as exc:
        raise ConfigError(str(exc)) from None
