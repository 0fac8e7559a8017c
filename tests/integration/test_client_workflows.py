"""`client.workflows` (Client and AsyncClient) against a real server and database: definitions written as
Step objects read back equal, refusals name every field at fault, updates write versions, etags refuse stale
writes."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import grpc
import pytest

from strait_client import (
    AbortedError,
    AlreadyExistsError,
    ApprovalStep,
    AsyncClient,
    Client,
    ConcurrencyStrategy,
    InvalidArgumentError,
    JobStep,
    MapSpec,
    NotFoundError,
    OnFailure,
    RetryStrategy,
    SleepStep,
    Step,
    StepRetryPolicy,
    SubWorkflowStep,
    TriggerRule,
    WaitForEventStep,
    Workflow,
    WorkflowConcurrency,
    WorkflowVersion,
)
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address, is_utc

URL = "https://example.com/hook"


def pipeline() -> list[Step]:
    return [
        Step("validate", job=JobStep(job_slug="charge"), input_template={"order": "{{ input.order }}"}),
        Step("risk", ["validate"], job=JobStep(job_slug="charge"), output_selector="result.score",
             retry_policy=StepRetryPolicy(5, RetryStrategy.FIXED, timedelta(seconds=2)),
             timeout=timedelta(seconds=30)),
        Step("charge", ["risk"], job=JobStep(job_slug="charge"), condition="steps.risk.output < 80",
             input_template='{"amount": "{{ input.amount }}"}', on_failure=OnFailure.CONTINUE),
        Step("review", ["risk"], approval=ApprovalStep(["ops"], timedelta(days=1))),
        Step("paid", ["charge"], wait_for_event=WaitForEventStep("paid-{{ input.order }}", lookback=timedelta(0))),
        Step("cool_off", ["review"], sleep=SleepStep(timedelta(minutes=5))),
        Step("ship", ["paid", "cool_off"], TriggerRule.NONE_FAILED, job=JobStep(job_slug="charge"),
             map=MapSpec("input.parcels", max_concurrency=2, tolerated_failure_percentage=12.5)),
        Step("again", ["ship"], TriggerRule.ALL_DONE, sub_workflow=SubWorkflowStep(workflow_slug="orders")),
    ]


async def test_workflow_definitions(app: App, api: Api) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("charge", URL)
        steps = pipeline()
        alert = Step("alert", job=JobStep(job_slug="charge"))
        concurrency = WorkflowConcurrency(1, "input.customer", ConcurrencyStrategy.CANCEL_NEWEST)

        order = await client.workflows.validate("orders", steps, on_failure_step=alert)
        assert sorted(order) == sorted(s.ref for s in steps)
        assert all(order.index(p) < order.index(s.ref) for s in steps for p in s.depends_on)
        assert [w async for w in client.workflows.list()] == []  # validate wrote nothing

        wf = await client.workflows.create("orders", steps, name="Orders", on_failure_step=alert,
                                           concurrency=concurrency, timeout=timedelta(hours=1), max_parallel_steps=4,
                                           tags={"team": "shop"})
        assert isinstance(wf, Workflow) and wf.id.startswith("wf_") and wf.slug == "orders" and wf.version == 1
        # Every step reads back as written (JSON text of an object reads back decoded).
        assert wf.steps[2].input_template == {"amount": "{{ input.amount }}"}
        assert wf.steps == tuple(dataclasses.replace(s, input_template=wf.steps[2].input_template)
                                 if s.ref == "charge" else s for s in steps)
        assert wf.on_failure_step == alert and wf.concurrency == concurrency
        assert wf.timeout == timedelta(hours=1) and wf.max_parallel_steps == 4 and wf.tags == {"team": "shop"}
        assert wf.enabled is True and wf.etag and is_utc(wf.create_time) and is_utc(wf.update_time)
        assert wf.steps[6].trigger_rule is TriggerRule.NONE_FAILED and wf.steps[6].trigger_rule == "none_failed"
        assert wf.steps[0].trigger_rule is None and wf.steps[3].kind == "approval"

        assert await client.workflows.get(wf.id) == wf
        assert await client.workflows.get("orders") == wf
        with pytest.raises(AlreadyExistsError):
            await client.workflows.create("orders", steps)

        # Attributes only: no new version.
        renamed = await client.workflows.update("orders", name="Order pipeline", etag=wf.etag)
        assert (renamed.name, renamed.version, renamed.steps) == ("Order pipeline", 1, wf.steps)
        assert renamed.etag != wf.etag
        # The definition changed: version 2. Fields not named keep their values.
        v2 = await client.workflows.update(wf.id, steps=steps[:2], on_failure_step=None, etag=renamed.etag)
        assert v2.version == 2 and [s.ref for s in v2.steps] == ["validate", "risk"]
        assert v2.on_failure_step is None and v2.concurrency == concurrency and v2.name == "Order pipeline"
        with pytest.raises(AbortedError) as stale:
            await client.workflows.update(wf.id, name="late", etag=renamed.etag)
        assert stale.value.code == grpc.StatusCode.ABORTED

        versions = [v async for v in client.workflows.versions("orders")]
        assert [v.version for v in versions] == [2, 1] and all(isinstance(v, WorkflowVersion) for v in versions)
        assert versions[1].workflow.steps == wf.steps and versions[1].workflow.on_failure_step == alert
        assert versions[0].workflow.steps == v2.steps and versions[0].workflow.id == wf.id
        assert all(is_utc(v.create_time) for v in versions)
        assert [v.version async for v in client.workflows.versions(wf.id, page_size=1)] == [2, 1]

        first = await client.workflows.get("orders", version=1)
        assert first.version == 1 and first.steps == wf.steps and first.name == "Order pipeline"
        assert (await client.workflows.get(wf.id)).version == 2
        with pytest.raises(NotFoundError):
            await client.workflows.get(wf.id, version=3)

        # Rolling back is writing an old version's definition again: version 3.
        back = await client.workflows.update(wf.id, steps=versions[1].workflow.steps,
                                             on_failure_step=versions[1].workflow.on_failure_step)
        assert back.version == 3 and back.steps == wf.steps

        others = [await client.workflows.create(f"w{i}", [Step("a", approval=ApprovalStep())]) for i in range(3)]
        assert [w.id async for w in client.workflows.list(page_size=2)] == [wf.id] + [o.id for o in others]

        with pytest.raises(AbortedError):
            await client.workflows.delete("orders", etag=wf.etag)
        deleted = await client.workflows.delete("orders", etag=back.etag)
        assert deleted.id == wf.id
        with pytest.raises(NotFoundError):
            await client.workflows.get(wf.id)
        with pytest.raises(NotFoundError):
            [v async for v in client.workflows.versions("orders")]


async def test_refused_definitions_name_every_field(app: App, api: Api) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("charge", URL)
        bad = [
            Step("a", ["ghost"], job=JobStep(job_slug="charge")),
            Step("b"),  # no kind
            Step("c", job=JobStep(job_slug="no-such-job"), condition="input.total >"),
        ]
        for call in (client.workflows.create, client.workflows.validate):
            with pytest.raises(InvalidArgumentError) as refused:
                await call("bad", bad)
            fields = dict(refused.value.field_violations)
            assert {"workflow.steps[0].depends_on[0]", "workflow.steps[1].kind",
                    "workflow.steps[2].condition"} <= set(fields), fields
            assert "'ghost' is not a step" in fields["workflow.steps[0].depends_on[0]"]
        with pytest.raises(InvalidArgumentError) as refused:  # the job is looked up once the rest is valid
            await client.workflows.validate("bad", [Step("c", job=JobStep(job_slug="no-such-job"))])
        assert refused.value.field_violations == [
            ("workflow.steps[0].job.job_slug", "no job 'no-such-job' in this project")]
        with pytest.raises(InvalidArgumentError) as cycle:
            await client.workflows.create("loop", [Step("a", ["b"], approval=ApprovalStep()),
                                                   Step("b", ["a"], approval=ApprovalStep())])
        assert "cycle: a -> b -> a" in dict(cycle.value.field_violations)["workflow.steps"]
        assert [w async for w in client.workflows.list()] == []

        wf = await client.workflows.create("fine", [Step("a", job=JobStep(job_slug="charge"))])
        with pytest.raises(InvalidArgumentError) as refused:  # a bad update is refused whole
            await client.workflows.update(wf.id, name="x", steps=[Step("a", ["z"], job=JobStep(job_slug="charge"))])
        assert [f for f, _ in refused.value.field_violations] == ["workflow.steps[0].depends_on[0]"]
        with pytest.raises(InvalidArgumentError) as refused:  # the slug is not an updatable field
            await client.workflows.update(wf.id, slug="renamed")
        assert [f for f, _ in refused.value.field_violations] == ["update_mask"]
        assert await client.workflows.get(wf.id) == wf
        with pytest.raises(ValueError, match="at least one field"):
            await client.workflows.update(wf.id)
        with pytest.raises(NotFoundError):
            await client.workflows.delete("missing")


def sync_scenario(addr: str, key: str) -> None:
    with Client(addr, key, timeout=10) as client:
        client.jobs.create("charge", URL)
        steps = [Step("a", job=JobStep(job_slug="charge")), Step("b", ["a"], approval=ApprovalStep())]
        assert client.workflows.validate("sync", steps) == ["a", "b"]
        wf = client.workflows.create("sync", steps, description="d")
        assert wf.steps == tuple(steps) and wf.version == 1 and wf.description == "d"
        assert client.workflows.get("sync") == wf and client.workflows.get(wf.id, version=1) == wf
        assert [w.id for w in client.workflows.list()] == [wf.id]

        v2 = client.workflows.update("sync", steps=steps[:1], etag=wf.etag)
        assert v2.version == 2 and v2.steps == tuple(steps[:1])
        try:
            client.workflows.update("sync", enabled=False, etag=wf.etag)
        except AbortedError as err:
            assert err.code == grpc.StatusCode.ABORTED
        else:
            raise AssertionError("expected AbortedError")
        versions = list(client.workflows.versions("sync"))
        assert [v.version for v in versions] == [2, 1] and versions[1].workflow.steps == tuple(steps)
        assert client.workflows.get("sync", version=1).steps == tuple(steps)

        try:
            client.workflows.create("sync-bad", [Step("a", ["z"], job=JobStep(job_slug="charge"))])
        except InvalidArgumentError as err:
            assert [f for f, _ in err.field_violations] == ["workflow.steps[0].depends_on[0]"]
        else:
            raise AssertionError("expected InvalidArgumentError")
        try:
            client.workflows.validate("sync-bad", [])
        except InvalidArgumentError as err:
            assert [f for f, _ in err.field_violations] == ["workflow.steps"]
        else:
            raise AssertionError("expected InvalidArgumentError")

        disabled = client.workflows.update(wf.id, enabled=False)
        assert disabled.enabled is False and disabled.version == 2
        assert client.workflows.delete("sync", etag=disabled.etag).id == wf.id
        assert list(client.workflows.list()) == []


async def test_sync_client_workflows(app: App, api: Api) -> None:
    # The server runs on this event loop, so the blocking client runs in a thread.
    await asyncio.to_thread(sync_scenario, address(app), api.key)
