"""OpenTelemetry spans of a run's way through Strait: trigger, claim, dispatch, settle.

One trace links caller, Strait and endpoint: the trigger span is a child of the TriggerJob server span (whose
parent came from the caller in gRPC metadata); its context is stored with the run (metadata key
TRACE_CONTEXT_KEY) so that the claim, in whatever process and however much later, continues the same trace;
the dispatch span is a child of the claim span and its context goes to the endpoint in the `traceparent`
header; the settle span is a child of the dispatch span. Claims and settles are batch statements: each run
gets its own span with the batch's start and end times, so that every span sits in its run's trace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from strait_server.model import TRACE_CONTEXT_KEY

if TYPE_CHECKING:
    from strait_server.queue import ClaimedRun, Outcome

_W3C = TraceContextTextMapPropagator()
# Spans waiting for their run's next step in this process; bounded so that runs that never take that step
# here (handed back at shutdown, settled elsewhere) cannot grow it without end.
_MAX_PENDING = 100_000


def _remember(pending: dict[str, Any], key: str, value: Any) -> None:
    if len(pending) >= _MAX_PENDING:
        pending.pop(next(iter(pending)))
    pending[key] = value


def stored_parent(metadata: Mapping[str, str]) -> Context:
    """The context a run's spans continue: the trigger span stored with the run, else a `traceparent` the
    caller put into the run's metadata, else none (a new trace)."""
    if TRACE_CONTEXT_KEY in metadata:
        return _W3C.extract({"traceparent": metadata[TRACE_CONTEXT_KEY]}, context=Context())
    if "traceparent" in metadata:
        carrier = {k: metadata[k] for k in ("traceparent", "tracestate") if k in metadata}
        return _W3C.extract(carrier, context=Context())
    return Context()


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" when there is none: tracing off)."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def _child_of(span_context: SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def inject_headers(headers: dict[str, str]) -> None:
    """Puts the current span's context (the dispatch span) into outgoing HTTP headers. With no span (tracing
    off) it leaves them alone, so trace headers from run metadata pass through unchanged."""
    if trace.get_current_span().get_span_context().is_valid:
        headers.pop("tracestate", None)  # it belonged to the caller's traceparent, replaced here
        propagate.inject(headers)


class RunTracing:
    """Spans of runs; with no tracer provider every method does nothing (and costs next to nothing)."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._tracer = provider.get_tracer("strait_server") if provider is not None else None
        self._claims: dict[str, SpanContext] = {}
        self._dispatched: dict[str, tuple[SpanContext, int]] = {}

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextlib.contextmanager
    def trigger(self, job_id: str, count: int, *, replay_of: str = "") -> Iterator[dict[str, str]]:
        """A span around writing new runs; yields the metadata entries that carry it with them."""
        if self._tracer is None:
            yield {}
            return
        attributes: dict[str, Any] = {"strait.job_id": job_id, "strait.run_count": count}
        if replay_of:
            attributes["strait.replay_of"] = replay_of
        with self._tracer.start_as_current_span("strait.trigger", attributes=attributes):
            carrier: dict[str, str] = {}
            _W3C.inject(carrier)
            yield {TRACE_CONTEXT_KEY: carrier["traceparent"]} if "traceparent" in carrier else {}

    def claimed_direct(self, run_id: str, start_ns: int, end_ns: int) -> None:
        """A run written already claimed by the trigger (direct dispatch): its claim span is a child of the
        current trigger span, over the same statement."""
        if self._tracer is None:
            return
        span = self._tracer.start_span("strait.claim", start_time=start_ns,
                                       attributes={"strait.run_id": run_id, "strait.claim.direct": True})
        span.end(end_time=end_ns)
        _remember(self._claims, run_id, span.get_span_context())

    def claimed(self, runs: list[ClaimedRun], start_ns: int, end_ns: int) -> None:
        if self._tracer is None:
            return
        for run in runs:
            span = self._tracer.start_span(
                "strait.claim", context=stored_parent(run.metadata), start_time=start_ns,
                attributes={"strait.run_id": run.id, "strait.job_id": run.job_id, "strait.attempt": run.attempt,
                            "strait.claim.batch_size": len(runs)})
            span.end(end_time=end_ns)
            _remember(self._claims, run.id, span.get_span_context())

    def dispatch(self, run: ClaimedRun) -> contextlib.AbstractContextManager[Span | None]:
        """The dispatch span, current while the executor runs (so it goes out in the HTTP headers)."""
        if self._tracer is None:
            return contextlib.nullcontext()
        return self._dispatch(run)

    @contextlib.contextmanager
    def _dispatch(self, run: ClaimedRun) -> Iterator[Span | None]:
        assert self._tracer is not None
        claim = self._claims.pop(run.id, None)
        parent = _child_of(claim) if claim is not None else stored_parent(run.metadata)
        with self._tracer.start_as_current_span(
                "strait.dispatch", context=parent, kind=SpanKind.CLIENT,
                attributes={"strait.run_id": run.id, "strait.job_id": run.job_id,
                            "strait.attempt": run.attempt}) as span:
            yield span
        _remember(self._dispatched, run.id, (span.get_span_context(), time.time_ns()))

    @staticmethod
    def dispatched(span: Span | None, outcome: Outcome, label: str) -> None:
        if span is None:
            return
        span.set_attribute("strait.outcome", label)
        status_code = outcome.record.get("status_code")
        if isinstance(status_code, int) and status_code:
            span.set_attribute("http.response.status_code", status_code)
        if outcome.error:
            span.set_status(Status(StatusCode.ERROR, outcome.error))

    def settled(self, outcomes: list[Outcome], settled: set[str]) -> None:
        """Settle spans: from the end of the dispatch to the commit of the batch that wrote its outcome."""
        if self._tracer is None:
            return
        now = time.time_ns()
        for o in outcomes:
            entry = self._dispatched.pop(o.run_id, None)
            if entry is None:
                continue
            parent, since = entry
            span = self._tracer.start_span(
                "strait.settle", context=_child_of(parent), start_time=since,
                attributes={"strait.run_id": o.run_id, "strait.to_status": o.to_status.value,
                            # False: the run had moved on (canceled, recovered) and the outcome was dropped.
                            "strait.settle.applied": o.run_id in settled})
            span.end(end_time=now)
