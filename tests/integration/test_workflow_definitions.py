"""WorkflowService: definitions are checked when written (every violation with its field path), versioned
immutably, and isolated per project."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import workflow_pb2, workflow_pb2_grpc
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, connect
from tests.integration.test_api_contract import violations

W = workflow_pb2


def stub(api: Api) -> workflow_pb2_grpc.WorkflowServiceStub:
    return workflow_pb2_grpc.WorkflowServiceStub(api.channel)


def job_step(ref: str, *depends_on: str, slug: str = "charge", **fields: Any) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), job=W.JobStep(job_slug=slug), **fields)


def order_pipeline(slug: str = "orders") -> W.Workflow:
    return W.Workflow(slug=slug, name="Orders", steps=[
        job_step("validate"),
        job_step("risk", "validate"),
        job_step("charge", "risk", condition="steps.risk.output.score < 80",
                 input_template_json='{"amount": "{{ input.amount }}", "risk": "{{ steps.risk.output.score }}"}'),
        W.Step(ref="approve", depends_on=["risk"], approval=W.ApprovalStep()),
        job_step("ship", "charge", "approve"),
    ])


async def create(api: Api, wf: W.Workflow) -> W.Workflow:
    return (await stub(api).CreateWorkflow(W.CreateWorkflowRequest(workflow=wf), metadata=api.metadata)).workflow


async def refused(api: Api, wf: W.Workflow) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(api, wf)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return violations(err.value)


async def listed(api: Api) -> list[W.Workflow]:
    return list((await stub(api).ListWorkflows(W.ListWorkflowsRequest(), metadata=api.metadata)).workflows)


@pytest.fixture
async def with_job(api: Api) -> Api:
    await api.create_job("charge", "https://example.com/charge")
    return api


async def test_create_and_read_back(with_job: Api) -> None:
    api = with_job
    created = await create(api, order_pipeline())
    assert created.id.startswith("wf_") and created.version == 1 and created.etag and created.enabled
    assert [s.ref for s in created.steps] == ["validate", "risk", "charge", "approve", "ship"]
    by_id = (await stub(api).GetWorkflow(W.GetWorkflowRequest(id=created.id), metadata=api.metadata)).workflow
    by_slug = (await stub(api).GetWorkflow(W.GetWorkflowRequest(slug="orders"), metadata=api.metadata)).workflow
    assert by_id == created == by_slug
    assert by_id.steps[2].condition == "steps.risk.output.score < 80"
    assert [w.id for w in await listed(api)] == [created.id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(api, order_pipeline())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_validate_gives_an_order_and_writes_nothing(with_job: Api) -> None:
    api = with_job
    reply = await stub(api).ValidateWorkflow(W.ValidateWorkflowRequest(workflow=order_pipeline()),
                                             metadata=api.metadata)
    order = list(reply.order)
    assert sorted(order) == ["approve", "charge", "risk", "ship", "validate"]
    for step in order_pipeline().steps:
        assert all(order.index(p) < order.index(step.ref) for p in step.depends_on)
    assert await listed(api) == []


@pytest.mark.parametrize(("steps", "field", "says"), [
    ([], "workflow.steps", "1 to 1000 steps"),
    ([job_step("a", "b"), job_step("b", "a")], "workflow.steps", "cycle: a -> b -> a"),
    ([job_step("a", "a")], "workflow.steps[0].depends_on[0]", "cannot depend on itself"),
    ([job_step("a"), job_step("a")], "workflow.steps[1].ref", "used by another step"),
    ([job_step("a", "ghost")], "workflow.steps[0].depends_on[0]", "'ghost' is not a step"),
    ([job_step("Risk-Check")], "workflow.steps[0].ref", "must match"),
    ([W.Step(ref="a")], "workflow.steps[0].kind", "set one of"),
    ([job_step("a", trigger_rule=99)], "workflow.steps[0].trigger_rule", "not a known value"),
    ([job_step("a", on_failure=7)], "workflow.steps[0].on_failure", "not a known value"),
    ([job_step("a", condition="input.total >")], "workflow.steps[0].condition", "not a valid CEL expression"),
    ([job_step("a"), job_step("b", condition="steps.c.output.ok"), job_step("c", "a")],
     "workflow.steps[1].condition", "reads steps.c, which is not a step this one depends on"),
    ([job_step("a", input_template_json='{"x": "{{ steps.a.output }}"}')],
     "workflow.steps[0].input_template_json", "reads steps.a"),
    ([job_step("a", input_template_json="{not json")], "workflow.steps[0].input_template_json", "valid JSON"),
    ([job_step("a", input_template_json='{"x": "{{ 1 + }}"}')], "workflow.steps[0].input_template_json",
     "not a valid CEL expression"),
    ([W.Step(ref="a", approval=W.ApprovalStep(), map=W.MapSpec(items="[1]"))], "workflow.steps[0].map",
     "only job and sub_workflow steps"),
    ([job_step("a", map=W.MapSpec(items="[1]", max_items=10_001))], "workflow.steps[0].map.max_items", "between"),
    ([W.Step(ref="a", sleep=W.SleepStep(duration=Duration(seconds=31 * 86400)))],
     "workflow.steps[0].sleep.duration", "at most 30 days"),
    ([W.Step(ref="a", wait_for_event=W.WaitForEventStep())], "workflow.steps[0].wait_for_event.event_key_template",
     "is required"),
    ([job_step("a", slug="no-such-job")], "workflow.steps[0].job.job_slug", "no job 'no-such-job'"),
])
async def test_bad_definitions_are_refused_with_the_field_at_fault(with_job: Api, steps: list[W.Step], field: str,
                                                                   says: str) -> None:
    found = await refused(with_job, W.Workflow(slug="bad", steps=steps))
    assert field in found, found
    assert says in found[field], found[field]
    assert await listed(with_job) == []  # nothing written


async def test_slugs_cannot_look_like_ids(with_job: Api) -> None:
    found = await refused(with_job, W.Workflow(slug="wf_orders", steps=[job_step("a")]))
    assert "reserved for workflow ids" in found["workflow.slug"]


async def test_every_violation_is_reported_at_once(with_job: Api) -> None:
    found = await refused(with_job, W.Workflow(slug="Bad Slug", steps=[
        job_step("a", "ghost"), W.Step(ref="b"), job_step("c", condition="(")]))
    assert {"workflow.slug", "workflow.steps[0].depends_on[0]", "workflow.steps[1].kind",
            "workflow.steps[2].condition"} <= set(found)


async def test_a_thousand_and_one_steps_are_refused(with_job: Api) -> None:
    steps = [job_step(f"s{i}") for i in range(1001)]
    assert "1 to 1000 steps" in (await refused(with_job, W.Workflow(slug="huge", steps=steps)))["workflow.steps"]


async def test_updates_write_versions_only_when_the_definition_changes(with_job: Api) -> None:
    api = with_job
    v1 = await create(api, order_pipeline())
    renamed = (await stub(api).UpdateWorkflow(W.UpdateWorkflowRequest(
        workflow=W.Workflow(id=v1.id, name="Order pipeline", steps=v1.steps),
        update_mask=FieldMask(paths=["name", "steps"])), metadata=api.metadata)).workflow
    assert renamed.version == 1 and renamed.name == "Order pipeline" and renamed.etag != v1.etag

    shorter = list(v1.steps)[:2]
    v2 = (await stub(api).UpdateWorkflow(W.UpdateWorkflowRequest(
        workflow=W.Workflow(id=v1.id, steps=shorter, etag=renamed.etag), update_mask=FieldMask(paths=["steps"])),
        metadata=api.metadata)).workflow
    assert v2.version == 2 and [s.ref for s in v2.steps] == ["validate", "risk"]

    old = (await stub(api).GetWorkflow(W.GetWorkflowRequest(id=v1.id, version=1), metadata=api.metadata)).workflow
    assert old.version == 1 and [s.ref for s in old.steps] == [s.ref for s in v1.steps]
    versions = (await stub(api).ListWorkflowVersions(W.ListWorkflowVersionsRequest(id=v1.id),
                                                     metadata=api.metadata)).versions
    assert [v.version for v in versions] == [2, 1]
    assert [s.ref for s in versions[1].workflow.steps] == [s.ref for s in v1.steps]

    with pytest.raises(grpc.aio.AioRpcError) as err:  # a stale etag
        await stub(api).UpdateWorkflow(W.UpdateWorkflowRequest(
            workflow=W.Workflow(id=v1.id, name="x", etag=renamed.etag), update_mask=FieldMask(paths=["name"])),
            metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a bad update is refused whole
        await stub(api).UpdateWorkflow(W.UpdateWorkflowRequest(
            workflow=W.Workflow(id=v1.id, steps=[job_step("a", "a")]), update_mask=FieldMask(paths=["steps"])),
            metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(api).GetWorkflow(W.GetWorkflowRequest(id=v1.id, version=3), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    current = (await stub(api).GetWorkflow(W.GetWorkflowRequest(id=v1.id), metadata=api.metadata)).workflow
    assert current.version == 2 and current.name == "Order pipeline"


async def test_update_mask_names_top_level_fields(with_job: Api) -> None:
    v1 = await create(with_job, order_pipeline())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(with_job).UpdateWorkflow(W.UpdateWorkflowRequest(
            workflow=W.Workflow(id=v1.id), update_mask=FieldMask(paths=["steps.ref"])), metadata=with_job.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in violations(err.value)


async def test_delete_frees_the_slug(with_job: Api) -> None:
    api = with_job
    first = await create(api, order_pipeline())
    deleted = (await stub(api).DeleteWorkflow(W.DeleteWorkflowRequest(slug="orders", etag=first.etag),
                                              metadata=api.metadata)).workflow
    assert deleted.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(api).GetWorkflow(W.GetWorkflowRequest(id=first.id), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    second = await create(api, order_pipeline())
    assert second.id != first.id and second.version == 1


async def test_projects_do_not_see_each_others_workflows(app: App, with_job: Api, settings: Settings) -> None:
    mine = await create(with_job, order_pipeline())
    other = await connect(app, settings.admin_key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(other).GetWorkflow(W.GetWorkflowRequest(id=mine.id), metadata=other.metadata)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await listed(other) == []
    # A job of another project is no job here.
    found = await refused(other, order_pipeline())
    assert "no job 'charge'" in found["workflow.steps[0].job.job_slug"]


async def test_list_pages(with_job: Api) -> None:
    made = [(await create(with_job, W.Workflow(slug=f"w{i}", steps=[job_step("a")]))).id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        reply = await stub(with_job).ListWorkflows(W.ListWorkflowsRequest(page_size=2, page_token=token),
                                                   metadata=with_job.metadata)
        seen += [w.id for w in reply.workflows]
        token = reply.next_page_token
        if not token:
            break
    assert seen == made
