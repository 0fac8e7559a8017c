"""A project with something on every list page: scheduled jobs and workflows, a run that went to dead letter
through a failing endpoint (whose circuit is then listed), a workflow run waiting for an approval, and a
connected worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from strait_client.v1 import circuit_pb2, circuit_pb2_grpc, run_pb2, workflow_pb2, workflow_pb2_grpc
from strait_client.worker import TaskContext, Worker
from strait_server.app import App
from tests.conftest import Api, eventually
from tests.integration.test_client import address
from tests.integration.test_workers import serving, worker_job
from tests.sink import Reply, Sink

YEARLY = "0 0 1 1 *"  # never fires while a test runs


@dataclass
class Seeded:
    """What a project's data is called on the pages: every id, slug and endpoint path (`names`), and those the
    runs and operations pages show (`shown`)."""

    names: set[str] = field(default_factory=set)
    shown: set[str] = field(default_factory=set)
    job_id: str = ""
    job_slug: str = ""
    workflow_id: str = ""
    workflow_slug: str = ""
    workflow_run_id: str = ""
    dead_run_id: str = ""
    failing_url: str = ""
    worker: Worker | None = None


async def seed(app: App, api: Api, sink: Sink, tag: str) -> Seeded:
    """Creates the project's data; tag (e.g. "alpha") makes its names unique and recognisable."""
    mark = f"{tag}-{uuid.uuid4().hex[:6]}"
    out = Seeded()
    ok_url = sink.script(f"/ok-{mark}", then=Reply(200))
    out.failing_url = sink.script(f"/fail-{mark}", then=Reply(503))
    job = await api.create_job(f"tick-{mark}", ok_url, cron=YEARLY)
    failing = await api.create_job(f"flaky-{mark}", out.failing_url, max_attempts=1)
    dead = await api.trigger(failing)
    await api.wait_status(dead.id, run_pb2.RUN_STATUS_DEAD_LETTER)
    flows = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
    workflow = (await flows.CreateWorkflow(workflow_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(
        slug=f"flow-{mark}", cron=YEARLY, steps=[workflow_pb2.Step(  # its runs wait for an approval
            ref="gate", approval=workflow_pb2.ApprovalStep())])), metadata=api.metadata)).workflow
    flow_run = (await flows.TriggerWorkflow(workflow_pb2.TriggerWorkflowRequest(id=workflow.id),
                                            metadata=api.metadata)).workflow_run
    handled = await worker_job(api, f"handled-{mark}")
    out.worker = Worker(address(app), api.key, slots=2, name=f"worker-{mark}")

    async def handle(ctx: TaskContext, payload: Any) -> None:
        return None
    out.worker.handler(handled.slug)(handle)
    out.job_id, out.job_slug, out.dead_run_id = job.id, job.slug, dead.id
    out.workflow_id, out.workflow_slug, out.workflow_run_id = workflow.id, workflow.slug, flow_run.id
    out.shown = {job.slug, failing.slug, dead.id, workflow.slug, flow_run.id, handled.slug, out.worker.name,
                 out.failing_url.removeprefix(sink.base_url)}
    out.names = out.shown | {job.id, failing.id, workflow.id, handled.id}
    return out


@asynccontextmanager
async def connected(seeded: Seeded) -> AsyncIterator[str]:
    """The project's worker connected until the block ends; yields its session id."""
    assert seeded.worker is not None
    async with serving(seeded.worker):
        assert seeded.worker.session_id
        seeded.names.add(seeded.worker.session_id)
        seeded.shown.add(seeded.worker.session_id)
        yield seeded.worker.session_id


async def circuit_listed(api: Api, url: str) -> None:
    """Waits until the failing endpoint's circuit is listed (the failure is settled)."""
    stub = circuit_pb2_grpc.EndpointCircuitServiceStub(api.channel)

    async def listed() -> bool:
        got = await stub.ListEndpointCircuits(circuit_pb2.ListEndpointCircuitsRequest(), metadata=api.metadata)
        return any(c.endpoint_url == url for c in got.circuits)
    await eventually(listed)
