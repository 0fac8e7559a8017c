"""What docs/errors.md promises about failed calls, against a real server: reasons in UPPER_SNAKE_CASE that
name the resource type, PreconditionFailure types that say what stood in the way, and detail types that
server reflection can describe (so grpcurl shows the details decoded)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from strait_client import (
    AlreadyExistsError,
    ApprovalStep,
    AsyncClient,
    FailedPreconditionError,
    NotFoundError,
    Step,
    StepRunStatus,
)
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address
from tests.integration.test_client_workflow_ops import waiting


async def test_not_found_and_already_exists_name_the_resource_type(app: App, api: Api) -> None:
    async with AsyncClient(address(app), api.key) as client:
        wf = await client.workflows.create("orders", [Step("review", approval=ApprovalStep())])
        with pytest.raises(NotFoundError) as run:
            await client.workflow_runs.get("wfr_nope")
        with pytest.raises(NotFoundError) as version:
            await client.workflows.get("orders", version=9)
        with pytest.raises(AlreadyExistsError) as again:
            await client.workflows.create("orders", [Step("review", approval=ApprovalStep())])

    assert (run.value.reason, run.value.domain) == ("WORKFLOW_RUN_NOT_FOUND", "strait.dev")
    assert (run.value.resource_type, run.value.resource_name) == ("workflow_run", "wfr_nope")
    assert run.value.message == "workflow run 'wfr_nope' not found"
    assert version.value.reason == "WORKFLOW_VERSION_NOT_FOUND"
    assert (version.value.resource_type, version.value.resource_name) == ("workflow_version", "orders@9")
    assert again.value.reason == "WORKFLOW_ALREADY_EXISTS"
    assert (again.value.resource_type, again.value.resource_name) == ("workflow", "orders")
    assert wf.version == 1


async def test_workflow_preconditions_name_what_stood_in_the_way(app: App, api: Api) -> None:
    async with AsyncClient(address(app), api.key) as client:
        wf = await client.workflows.create(
            "gated", [Step("review", approval=ApprovalStep()), Step("ship", ["review"], approval=ApprovalStep())]
        )
        run = await client.workflows.trigger("gated")
        await waiting(client, run.id, "review")
        with pytest.raises(FailedPreconditionError) as not_paused:
            await client.workflow_runs.resume(run.id)
        await client.workflow_runs.approve(run.id, "review")
        await waiting(client, run.id, "ship")  # the run goes on: what refuses the second decision is the step
        with pytest.raises(FailedPreconditionError) as decided:
            await client.workflow_runs.approve(run.id, "review")
        await client.workflows.update("gated", enabled=False)
        with pytest.raises(FailedPreconditionError) as disabled:
            await client.workflows.trigger("gated")
        steps = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}

    assert not_paused.value.reason == "RUN_STATUS"
    assert [v[:2] for v in not_paused.value.precondition_violations] == [("RUN_STATUS", run.id)]
    assert decided.value.reason == "STEP_STATE"
    assert [v[:2] for v in decided.value.precondition_violations] == [("STEP_STATE", "review")]
    assert disabled.value.reason == "WORKFLOW_DISABLED"
    assert [v[:2] for v in disabled.value.precondition_violations] == [("WORKFLOW_STATE", wf.id)]
    assert (steps["review"].status, steps["ship"].status) == (StepRunStatus.COMPLETED, StepRunStatus.WAITING)


@pytest.mark.parametrize(
    "detail",
    ["ErrorInfo", "BadRequest", "ResourceInfo", "PreconditionFailure", "QuotaFailure", "RetryInfo", "RequestInfo"],
)
async def test_reflection_describes_every_detail_type(app: App, detail: str) -> None:
    """grpcurl looks detail types up through reflection to print them as JSON instead of raw bytes."""
    async with grpc.aio.insecure_channel(address(app)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"google.rpc.{detail}")
        answers = [a async for a in stub.ServerReflectionInfo(iter([ask]))]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[0].file_descriptor_response.file_descriptor_proto
    ]
    described = {f"{f.package}.{m.name}" for f in files for m in f.message_type}
    assert f"google.rpc.{detail}" in described
