"""OpenTelemetry: one trace from the caller through Strait to the job's endpoint.

The SDK's in-memory exporter (shipped for tests) collects the spans of the client and of the server, which
run in this process with one tracer provider; the endpoint is the real HTTP sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from strait_client import AsyncClient, Client, JobStep, Step
from strait_client._tracing import exporter_names
from strait_server.app import App
from strait_server.config import ConfigError, Settings
from strait_server.telemetry import server_tracer_provider
from tests.conftest import connect, eventually
from tests.sink import Sink

TRIGGER = "/strait.v1.JobService/TriggerJob"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


@pytest.fixture
async def traced_app(settings: Settings, provider: TracerProvider) -> AsyncIterator[App]:
    app = App(settings, tracer_provider=provider)
    await app.start(migrate=False)
    yield app
    await app.stop()


def _trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


def _one(spans: list[ReadableSpan], name: str, kind: SpanKind | None = None) -> ReadableSpan:
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


@pytest.mark.parametrize("path", ["direct", "queued"])
async def test_one_trace_links_caller_strait_and_endpoint(
        traced_app: App, settings: Settings, sink: Sink, provider: TracerProvider, exporter: InMemorySpanExporter,
        path: str) -> None:
    api = await connect(traced_app, settings.admin_key)
    job = await api.create_job("traced", sink.script("/traced"))
    # At idle a trigger is written already claimed; with an idempotency key it waits in the queue for a claim.
    key = "once" if path == "queued" else ""
    async with AsyncClient(f"127.0.0.1:{traced_app.port}", api.key, tracer_provider=provider) as client:
        with provider.get_tracer("caller").start_as_current_span("caller") as caller:
            run = await client.jobs.trigger(job.id, {"n": 1}, idempotency_key=key)
    assert (run.status == "executing") is (path == "direct")
    trace_id = caller.get_span_context().trace_id

    [received] = await sink.wait_for(1, "/traced")
    _, header_trace, header_parent, _ = received.headers["traceparent"].split("-")
    assert int(header_trace, 16) == trace_id

    async def whole_trace() -> list[ReadableSpan] | None:
        spans = _trace(exporter, trace_id)
        return spans if any(s.name == "strait.settle" for s in spans) else None
    spans = await eventually(whole_trace)
    client_span = _one(spans, TRIGGER, SpanKind.CLIENT)
    server_span = _one(spans, TRIGGER, SpanKind.SERVER)
    trigger, claim = _one(spans, "strait.trigger"), _one(spans, "strait.claim")
    dispatch, settle = _one(spans, "strait.dispatch"), _one(spans, "strait.settle")
    # caller -> client -> server -> trigger -> claim -> dispatch -> (endpoint) ; dispatch -> settle
    assert _parent_id(client_span) == caller.get_span_context().span_id
    assert _parent_id(server_span) == client_span.context.span_id  # type: ignore[union-attr]
    assert _parent_id(trigger) == server_span.context.span_id  # type: ignore[union-attr]
    assert _parent_id(claim) == trigger.context.span_id  # type: ignore[union-attr]
    assert _parent_id(dispatch) == claim.context.span_id  # type: ignore[union-attr]
    assert int(header_parent, 16) == dispatch.context.span_id  # type: ignore[union-attr]
    assert _parent_id(settle) == dispatch.context.span_id  # type: ignore[union-attr]
    assert dispatch.attributes is not None and dispatch.attributes["strait.run_id"] == run.id
    assert dispatch.attributes["strait.outcome"] == "completed"
    assert settle.attributes is not None and settle.attributes["strait.settle.applied"] is True
    assert (claim.attributes or {}).get("strait.claim.direct", False) is (path == "direct")

    # The trace context kept with the run is Strait's own: never shown to users.
    async with AsyncClient(f"127.0.0.1:{traced_app.port}", api.key) as plain:
        assert "_traceparent" not in (await plain.runs.get(run.id)).metadata


async def test_traced_clients_stream_and_close(
        traced_app: App, settings: Settings, sink: Sink, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    api = await connect(traced_app, settings.admin_key)
    job = await api.create_job("streamed", sink.script("/streamed"))
    address = f"127.0.0.1:{traced_app.port}"
    async with AsyncClient(address, api.key, tracer_provider=provider) as client:
        run = await client.jobs.trigger(job.id)
        assert (await client.runs.wait(run.id, timeout=15)).status == "completed"  # a WatchRun stream

    def sync_wait() -> str:
        with Client(address, api.key, tracer_provider=provider) as sync_client:
            return str(sync_client.runs.wait(run.id, timeout=15).status)
    assert await asyncio.to_thread(sync_wait) == "completed"
    client_spans = [s.name for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    # Unary calls are traced; watch streams are not (see strait_client/_tracing.py).
    assert client_spans.count("/strait.v1.RunService/GetRun") == 2
    assert "/strait.v1.RunService/WatchRun" not in client_spans


async def test_without_tracing_the_callers_traceparent_in_metadata_passes_through(
        app: App, settings: Settings, sink: Sink) -> None:
    api = await connect(app, settings.admin_key)
    job = await api.create_job("plain", sink.script("/plain"))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await api.trigger(job, metadata={"traceparent": traceparent})
    [received] = await sink.wait_for(1, "/plain")
    assert received.headers["traceparent"] == traceparent


async def test_the_trace_context_key_is_reserved(app: App, settings: Settings) -> None:
    api = await connect(app, settings.admin_key)
    job = await api.create_job("reserved", "http://127.0.0.1:9/never")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.trigger(job, metadata={"_traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_tracing_is_on_only_when_otel_variables_ask_for_it() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == ["otlp_proto_grpc"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == [
        "otlp_proto_http"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []


def test_the_server_builds_its_provider_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = server_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "strait"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "strait-eu")
    provider = server_tracer_provider()
    assert isinstance(provider, TracerProvider) and provider.resource.attributes["service.name"] == "strait-eu"
    provider.shutdown()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="zipkin"):
        server_tracer_provider()


async def test_a_workflow_runs_steps_continue_its_triggers_trace(
        traced_app: App, settings: Settings, sink: Sink, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    api = await connect(traced_app, settings.admin_key)
    await api.create_job("first", sink.script("/first"))
    await api.create_job("second", sink.script("/second"))
    async with AsyncClient(f"127.0.0.1:{traced_app.port}", api.key, tracer_provider=provider) as client:
        await client.workflows.create("traced", [Step("first", job=JobStep(job_slug="first")),
                                                 Step("second", ["first"], job=JobStep(job_slug="second"))])
        with provider.get_tracer("caller").start_as_current_span("caller") as caller:
            run = await client.workflows.trigger("traced")
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status == "completed"
        steps = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}
    trace_id = caller.get_span_context().trace_id

    async def both_claimed() -> list[ReadableSpan] | None:
        claims = [s for s in _trace(exporter, trace_id) if s.name == "strait.claim"]
        return claims if len(claims) == 2 else None
    claims = await eventually(both_claimed)
    server = _one(_trace(exporter, trace_id), "/strait.v1.WorkflowService/TriggerWorkflow", SpanKind.SERVER)
    # Both steps' job runs, the second started by the engine later on, continue the trigger's trace.
    assert {_parent_id(c) for c in claims} == {server.context.span_id}  # type: ignore[union-attr]
    assert {(c.attributes or {})["strait.run_id"] for c in claims} == {s.job_run_id for s in steps.values()}
    for path in ("/first", "/second"):
        [received] = sink.for_path(path)
        assert int(received.headers["traceparent"].split("-")[1], 16) == trace_id
