"""Builds the grpc.aio server: public services behind the guard interceptor, health, reflection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from strait_client.v1 import (
    circuit_pb2,
    circuit_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    project_pb2,
    project_pb2_grpc,
    run_context_pb2,
    run_context_pb2_grpc,
    run_pb2,
    run_pb2_grpc,
    schedule_pb2,
    schedule_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)
from strait_server.api.circuits import EndpointCircuitServicer
from strait_server.api.deps import Deps
from strait_server.api.events import EventServicer
from strait_server.api.inflight import Admission, InFlightBytes
from strait_server.api.interceptor import GuardInterceptor
from strait_server.api.jobs import JobServicer
from strait_server.api.projects import ProjectServicer
from strait_server.api.run_context import RunContextServicer
from strait_server.api.runs import RunServicer
from strait_server.api.schedules import ScheduleServicer
from strait_server.api.workers import WorkerServicer
from strait_server.api.workflow_runs import WorkflowRunServicer
from strait_server.api.workflows import WorkflowServicer
from strait_server.config import Settings
from strait_server.telemetry.metrics import Metrics

SERVICE_NAMES = (
    project_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name,
    job_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    run_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
    run_context_pb2.DESCRIPTOR.services_by_name["RunContextService"].full_name,
    schedule_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
    circuit_pb2.DESCRIPTOR.services_by_name["EndpointCircuitService"].full_name,
    workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
    workflow_run_pb2.DESCRIPTOR.services_by_name["WorkflowRunService"].full_name,
    event_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
)


def _admission(settings: Settings, metrics: Metrics | None) -> Admission:
    """As many large requests read at once as the byte budget holds at the largest message size."""
    slots = max(1, settings.max_inflight_request_bytes // settings.grpc_max_message_bytes)
    return Admission(slots, max_wait=settings.large_request_wait.total_seconds(),
                     waiting=metrics.large_requests_waiting if metrics is not None else None)


def build_server(deps: Deps, outer_interceptors: Sequence[Any] = (),
                 metrics: Metrics | None = None) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """`outer_interceptors` (metrics, tracing) run before the guard, so they see every call as it ends."""
    max_msg = deps.settings.grpc_max_message_bytes
    server = grpc.aio.server(
        interceptors=[*outer_interceptors, GuardInterceptor(
        deps.authenticator, deps.limiter, InFlightBytes(server_max=deps.settings.max_inflight_request_bytes,
                                                        caller_max=deps.settings.max_inflight_request_bytes_per_caller),
        _admission(deps.settings, metrics))],
        options=[
            ("grpc.max_receive_message_length", max_msg),
            ("grpc.max_send_message_length", max_msg),
            # A peer that stopped answering without closing (a worker's machine gone, a frozen process) is
            # dropped within 40 s, and with it the runs its worker held: gRPC otherwise stops pinging a quiet
            # connection after two pings, and waits for an answer for ping_timeout_ms (1 minute).
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.ping_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # Without it, the transport grows each stream's receive window to the connection's estimated
            # bandwidth-delay product (megabytes on a fast link) and takes in requests nobody reads yet: sixty
            # waiting 7 MB batches then sat in memory all the same. A request being read still gets a window
            # as large as its message, so this costs no throughput (bench_dispatch batch enqueue unchanged).
            ("grpc.http2.bdp_probe", 0),
            # Bounds a watch stream whose client stopped reading without disconnecting: its blocked send
            # cannot be cancelled from Python, but closing the connection ends it (UNAVAILABLE, resumable).
            # Healthy streams end themselves at watch_max_duration, before the grace runs out.
            ("grpc.max_connection_age_ms", int(deps.settings.watch_max_duration.total_seconds() * 1000)),
            ("grpc.max_connection_age_grace_ms", int(deps.settings.watch_stall_grace.total_seconds() * 1000)),
            ("grpc.so_reuseport", int(deps.settings.reuse_port)),
        ],
    )
    project_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(deps), server)
    job_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(deps), server)
    run_pb2_grpc.add_RunServiceServicer_to_server(RunServicer(deps), server)
    run_context_pb2_grpc.add_RunContextServiceServicer_to_server(RunContextServicer(deps), server)
    schedule_pb2_grpc.add_ScheduleServiceServicer_to_server(ScheduleServicer(deps), server)
    circuit_pb2_grpc.add_EndpointCircuitServiceServicer_to_server(EndpointCircuitServicer(deps), server)
    workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(
        WorkflowServicer(deps, deps.workflows, deps.workflow_runs), server)
    workflow_run_pb2_grpc.add_WorkflowRunServiceServicer_to_server(
        WorkflowRunServicer(deps, deps.workflow_run_store, deps.workflow_runs), server)
    event_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(deps.sent_events), server)
    if deps.worker_hub is not None and deps.worker_sessions is not None:
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerServicer(deps, deps.worker_hub, deps.worker_sessions), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)
