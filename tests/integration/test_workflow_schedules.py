"""Cron schedules of workflows: validation, one run per tick on the version current at the tick, overlap
policies, ScheduleService with workflow selectors, several schedulers (in-process loops and `strait serve`
processes) on one database, disabled and deleted workflows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strait_client import AsyncClient, CronOverlapPolicy, FailedPreconditionError, JobStep, NotFoundError, Step
from strait_client.v1 import (
    job_pb2,
    schedule_pb2,
    schedule_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)
from strait_server.app import App, Role
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.processes import serve_subprocesses
from tests.sink import Reply, Sink
from tests.support import FakeClock, scheduler_passes

W = workflow_pb2
R = workflow_run_pb2
S = schedule_pb2
OPEN = {R.WORKFLOW_RUN_STATUS_RUNNING, R.WORKFLOW_RUN_STATUS_QUEUED, R.WORKFLOW_RUN_STATUS_PAUSED}


class Flows:
    """The stubs a test needs, with the project's key attached."""

    def __init__(self, api: Api, sink: Sink) -> None:
        self.api = api
        self.sink = sink
        self.defs = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
        self.runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel)
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(api.channel)

    async def job(self, slug: str, *replies: Reply, then: Reply | None = None) -> str:
        await self.api.create_job(slug, self.sink.script(f"/{slug}", *replies, then=then))
        return slug

    async def create(self, slug: str, *steps: W.Step, **fields: Any) -> W.Workflow:
        request = W.CreateWorkflowRequest(workflow=W.Workflow(slug=slug, steps=steps, **fields))
        return (await self.defs.CreateWorkflow(request, metadata=self.api.metadata)).workflow

    async def update(self, workflow: W.Workflow, *paths: str) -> W.Workflow:
        request = W.UpdateWorkflowRequest(workflow=workflow, update_mask=FieldMask(paths=list(paths)))
        return (await self.defs.UpdateWorkflow(request, metadata=self.api.metadata)).workflow

    async def get(self, slug: str) -> W.Workflow:
        return (await self.defs.GetWorkflow(W.GetWorkflowRequest(slug=slug), metadata=self.api.metadata)).workflow

    async def runs_of(self, workflow: W.Workflow) -> list[R.WorkflowRun]:
        """The workflow's runs, oldest first."""
        reply = await self.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(workflow_id=workflow.id, page_size=1000),
                                                 metadata=self.api.metadata)
        return list(reversed(reply.workflow_runs))

    async def wait_statuses(self, workflow: W.Workflow, expected: list[int]) -> list[R.WorkflowRun]:
        async def check() -> list[R.WorkflowRun] | None:
            runs = await self.runs_of(workflow)
            return runs if [r.status for r in runs] == expected else None
        return await eventually(check)


def step(ref: str, job: str, *depends_on: str, **fields: Any) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), job=W.JobStep(job_slug=job), **fields)


def tick_of(workflow: W.Workflow) -> datetime:
    assert workflow.HasField("next_fire_time"), workflow
    return workflow.next_fire_time.ToDatetime(tzinfo=UTC)


def bad_request(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return {v.field: v.description for v in bad.field_violations}
    raise AssertionError(f"no BadRequest in {err!r}")


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {err!r}")


async def _schedulers(make_app: AppFactory, clock: FakeClock, count: int) -> list[App]:
    """Scheduler processes' worth of components (cron loop, workflow engine) on the injectable clock."""
    return [await make_app(frozenset({Role.SCHEDULER}), clock=clock, cron_interval=timedelta(milliseconds=50))
            for _ in range(count)]


@pytest.fixture
async def front(make_app: AppFactory) -> App:
    """API and dispatch, without a scheduler of its own: only the tests' schedulers (on a fake clock) fire."""
    return await make_app(frozenset({Role.API, Role.WORKER}))


@pytest.fixture
async def flows(front: App, settings: Settings, sink: Sink) -> AsyncIterator[Flows]:
    api = await connect(front, settings.admin_key)
    yield Flows(api, sink)
    await api.channel.close()


@pytest.mark.parametrize(("fields", "path"), [
    ({"cron": "61 * * * *"}, "workflow.cron"),
    ({"cron": "0 0 31 2 *"}, "workflow.cron"),  # valid fields, never matches
    ({"cron": "* * * * * *"}, "workflow.cron"),
    ({"cron": "@daily"}, "workflow.cron"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "workflow.timezone"),
    ({"cron": "* * * * *", "cron_overlap_policy": 7}, "workflow.cron_overlap_policy"),
    ({"cron": "* * * * *", "schedule_input_json": "[1, 2]"}, "workflow.schedule_input_json"),
    ({"cron": "* * * * *", "schedule_input_json": "{nope"}, "workflow.schedule_input_json"),
    # Every tick needs the run's concurrency key, computed from the schedule's input.
    ({"cron": "* * * * *", "schedule_input_json": '{"other": 1}',
      "concurrency": W.WorkflowConcurrency(max_runs=1, key="input.tenant")}, "workflow.schedule_input_json"),
])
async def test_bad_schedules_are_invalid_argument_and_write_nothing(
        flows: Flows, fields: dict[str, Any], path: str) -> None:
    await flows.job("work")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.create("bad", step("a", "work"), **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert path in bad_request(err.value), bad_request(err.value)
    listed = await flows.defs.ListWorkflows(W.ListWorkflowsRequest(), metadata=flows.api.metadata)
    assert list(listed.workflows) == []

    # The same checks on an update, which then changes nothing.
    good = await flows.create("good", step("a", "work"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.update(W.Workflow(id=good.id, **fields), *fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert path in bad_request(err.value)
    assert (await flows.get("good")).etag == good.etag


async def test_schedule_fields_are_attributes_not_versions(flows: Flows) -> None:
    await flows.job("work")
    created = await flows.create("nightly", step("a", "work"), cron="30  2 * * *", timezone="Europe/Berlin",
                                 cron_overlap_policy=job_pb2.CRON_OVERLAP_POLICY_SKIP,
                                 schedule_input_json='{"mode": "full"}')
    assert (created.cron, created.timezone, created.schedule_input_json) == ("30 2 * * *", "Europe/Berlin",
                                                                             '{"mode": "full"}')
    assert created.cron_overlap_policy == job_pb2.CRON_OVERLAP_POLICY_SKIP and not created.schedule_paused
    first = tick_of(created).astimezone(ZoneInfo("Europe/Berlin"))
    assert (first.hour, first.minute) == (2, 30) and tick_of(created) > datetime.now(UTC)

    # Only schedule fields change: no new version, and the due time follows the new expression.
    moved = await flows.update(W.Workflow(id=created.id, cron="0 3 * * 1-5", schedule_input_json="{}"),
                               "cron", "schedule_input_json")
    assert moved.version == 1 and moved.etag != created.etag
    local = tick_of(moved).astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (3, 0) and local.weekday() < 5
    versions = await flows.defs.ListWorkflowVersions(W.ListWorkflowVersionsRequest(id=created.id),
                                                     metadata=flows.api.metadata)
    assert [v.version for v in versions.versions] == [1]

    # A new definition is a new version; the schedule and its due time stay as they were.
    changed = await flows.update(W.Workflow(id=created.id, steps=[step("a", "work"), step("b", "work", "a")]),
                                 "steps")
    assert changed.version == 2 and changed.cron == "0 3 * * 1-5"
    assert changed.next_fire_time == moved.next_fire_time

    # Reading an earlier version shows its definition; the schedule is the workflow's, not a version's.
    old = (await flows.defs.GetWorkflow(W.GetWorkflowRequest(id=created.id, version=1),
                                        metadata=flows.api.metadata)).workflow
    assert [s.ref for s in old.steps] == ["a"]

    removed = await flows.update(W.Workflow(id=created.id), "cron")
    assert removed.cron == "" and not removed.HasField("next_fire_time") and removed.version == 2


async def test_a_due_tick_starts_one_run_of_the_version_current_at_the_tick(
        flows: Flows, make_app: AppFactory, sink: Sink) -> None:
    await flows.job("first")
    await flows.job("second")
    workflow = await flows.create("every-minute", step("a", "first"), cron="* * * * *",
                                  schedule_input_json='{"n": 1}')
    tick = tick_of(workflow)
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 2)  # two cron loops on one database

    clock.now = tick + timedelta(seconds=1)
    await scheduler_passes(schedulers, 3)
    [run] = await flows.runs_of(workflow)
    assert (run.version, run.idempotency_key) == (1, f"cron:{tick.isoformat()}")
    assert json.loads(run.input_json) == {"n": 1} and run.parent_workflow_run_id == ""
    await flows.wait_statuses(workflow, [R.WORKFLOW_RUN_STATUS_COMPLETED])
    assert [r.json() for r in sink.for_path("/first")] == [{"n": 1}]

    # The definition changes between two ticks: the next tick runs the new version.
    await flows.update(W.Workflow(id=workflow.id, steps=[step("b", "second")]), "steps")
    clock.now = tick + timedelta(minutes=1, seconds=1)
    await scheduler_passes(schedulers, 3)
    runs = await flows.wait_statuses(workflow, [R.WORKFLOW_RUN_STATUS_COMPLETED] * 2)
    assert [(r.version, r.idempotency_key) for r in runs] == [
        (1, f"cron:{tick.isoformat()}"), (2, f"cron:{(tick + timedelta(minutes=1)).isoformat()}")]
    assert [r.json() for r in sink.for_path("/second")] == [{"n": 1}]
    assert len(sink.for_path("/first")) == 1

    # Ten minutes without a scheduler: the latest missed tick fires once, not a burst.
    clock.now = tick + timedelta(minutes=11, seconds=30)
    await scheduler_passes(schedulers, 3)
    runs = await flows.runs_of(workflow)
    assert [r.idempotency_key for r in runs[2:]] == [f"cron:{(tick + timedelta(minutes=11)).isoformat()}"]
    assert tick_of(await flows.get("every-minute")) == tick + timedelta(minutes=12)


@pytest.mark.parametrize(("policy", "expected"), [
    (job_pb2.CRON_OVERLAP_POLICY_SKIP, [R.WORKFLOW_RUN_STATUS_RUNNING]),
    (job_pb2.CRON_OVERLAP_POLICY_CANCEL_RUNNING, [R.WORKFLOW_RUN_STATUS_CANCELED, R.WORKFLOW_RUN_STATUS_RUNNING]),
    (job_pb2.CRON_OVERLAP_POLICY_ALLOW, [R.WORKFLOW_RUN_STATUS_RUNNING, R.WORKFLOW_RUN_STATUS_RUNNING]),
])
async def test_overlap_policies(flows: Flows, make_app: AppFactory, policy: int, expected: list[int]) -> None:
    gate = asyncio.Event()
    await flows.job("slow", then=Reply(200, block=gate))
    workflow = await flows.create("overlapping", step("a", "slow"), cron="*/5 * * * *", cron_overlap_policy=policy)
    tick = tick_of(workflow)
    clock = FakeClock()
    [scheduler] = await _schedulers(make_app, clock, 1)
    clock.now = tick
    await scheduler_passes([scheduler], 2)
    [first] = await flows.runs_of(workflow)
    assert first.status == R.WORKFLOW_RUN_STATUS_RUNNING
    await flows.sink.wait_for(1, "/slow")  # its step's job run is executing

    clock.now = tick + timedelta(minutes=5)
    await scheduler_passes([scheduler], 2)
    runs = await flows.wait_statuses(workflow, expected)
    assert runs[0].id == first.id
    if policy == job_pb2.CRON_OVERLAP_POLICY_CANCEL_RUNNING:
        assert runs[0].error == "canceled by a newer cron tick"
    gate.set()
    if policy == job_pb2.CRON_OVERLAP_POLICY_SKIP:
        # Once the earlier run has ended, the next tick starts one again.
        await flows.wait_statuses(workflow, [R.WORKFLOW_RUN_STATUS_COMPLETED])
        clock.now = tick + timedelta(minutes=10)
        await scheduler_passes([scheduler], 2)
        runs = await flows.runs_of(workflow)
        assert [r.idempotency_key for r in runs] == [f"cron:{tick.isoformat()}",
                                                     f"cron:{(tick + timedelta(minutes=10)).isoformat()}"]


async def test_schedule_service_with_workflow_selectors(flows: Flows, make_app: AppFactory, sink: Sink) -> None:
    await flows.job("report")
    workflow = await flows.create("managed", step("a", "report"), cron="0 9 * * 1-5", timezone="Europe/Berlin",
                                  schedule_input_json='{"scope": "all"}')
    md = flows.api.metadata
    request = S.ListScheduleFireTimesRequest(workflow_slug="managed", count=3)
    times = (await flows.schedules.ListScheduleFireTimes(request, metadata=md)).fire_times
    berlin = [t.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin")) for t in times]
    assert [(t.hour, t.minute) for t in berlin] == [(9, 0)] * 3 and all(t.weekday() < 5 for t in berlin)
    assert times[0] == workflow.next_fire_time

    paused = await flows.schedules.PauseSchedule(S.PauseScheduleRequest(workflow_id=workflow.id), metadata=md)
    assert not paused.HasField("job")
    assert paused.workflow.schedule_paused and not paused.workflow.HasField("next_fire_time")
    assert paused.workflow.id == workflow.id and paused.workflow.etag != workflow.etag
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 1)
    clock.now = times[0].ToDatetime(tzinfo=UTC) + timedelta(seconds=1)
    await scheduler_passes(schedulers, 3)
    assert await flows.runs_of(workflow) == []  # paused: the tick did not fire
    clock.now = datetime.now(UTC)  # the schedulers' time back before the tick, which is not to fire below
    await scheduler_passes(schedulers, 2)

    resumed = await flows.schedules.ResumeSchedule(S.ResumeScheduleRequest(workflow_slug="managed"), metadata=md)
    assert not resumed.workflow.schedule_paused and resumed.workflow.next_fire_time == times[0]

    # Fired by hand: the current version with the schedule's input, no key, the schedule left as it is.
    fired = (await flows.schedules.TriggerSchedule(S.TriggerScheduleRequest(workflow_slug="managed"),
                                                   metadata=md)).workflow_run
    assert (fired.workflow_id, fired.version, fired.idempotency_key) == (workflow.id, 1, "")
    assert json.loads(fired.input_json) == {"scope": "all"}
    await flows.wait_statuses(workflow, [R.WORKFLOW_RUN_STATUS_COMPLETED])
    assert [r.json() for r in sink.for_path("/report")] == [{"scope": "all"}]
    assert (await flows.get("managed")).next_fire_time == times[0]

    # Errors, as for jobs.
    plain = await flows.create("plain", step("a", "report"))
    calls: list[tuple[Any, Any]] = [
            (flows.schedules.ListScheduleFireTimes, S.ListScheduleFireTimesRequest(workflow_id=plain.id)),
            (flows.schedules.PauseSchedule, S.PauseScheduleRequest(workflow_slug="plain")),
            (flows.schedules.ResumeSchedule, S.ResumeScheduleRequest(workflow_id=plain.id)),
            (flows.schedules.TriggerSchedule, S.TriggerScheduleRequest(workflow_slug="plain"))]
    for call, named in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(named, metadata=md)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, call
        assert error_info(err.value).reason == "NO_SCHEDULE"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(type(named)(workflow_slug="no-such-workflow"), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(type(named)(), metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    off = await flows.create("off", step("a", "report"), cron="* * * * *", enabled=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.schedules.TriggerSchedule(S.TriggerScheduleRequest(workflow_id=off.id), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).reason == "WORKFLOW_DISABLED"
    assert await flows.runs_of(off) == []


async def test_disabled_and_deleted_workflows_do_not_fire(flows: Flows, make_app: AppFactory,
                                                          settings: Settings) -> None:
    await flows.job("work")
    off = await flows.create("off", step("a", "work"), cron="* * * * *", enabled=False)
    gone = await flows.create("gone", step("a", "work"), cron="* * * * *")
    await flows.defs.DeleteWorkflow(W.DeleteWorkflowRequest(id=gone.id), metadata=flows.api.metadata)
    tick = tick_of(off)
    clock = FakeClock()
    schedulers = await _schedulers(make_app, clock, 1)
    clock.now = tick + timedelta(minutes=3, seconds=1)
    await scheduler_passes(schedulers, 3)
    assert await flows.runs_of(off) == [] and await flows.runs_of(gone) == []
    conn = await asyncpg.connect(settings.database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM workflow_runs WHERE workflow_id = ANY($1::text[])",
                                    [off.id, gone.id])
        assert count == 0
        # A disabled workflow's schedule stays where it was.
        assert await conn.fetchval("SELECT next_fire_time FROM workflows WHERE id = $1", off.id) == tick
    finally:
        await conn.close()

    # Enabled again: the latest tick missed while it was disabled fires once, then the schedule goes on.
    await flows.update(W.Workflow(id=off.id, enabled=True), "enabled")
    await scheduler_passes(schedulers, 3)
    [run] = await flows.runs_of(off)
    assert run.idempotency_key == f"cron:{(tick + timedelta(minutes=3)).isoformat()}"
    assert tick_of(await flows.get("off")) == tick + timedelta(minutes=4)


async def test_two_server_processes_fire_each_tick_once(settings: Settings, sink: Sink) -> None:
    """Real `strait serve` processes racing for the same due workflow schedules."""
    async with serve_subprocesses(settings, 2) as servers:
        api = await connect(servers[0][1], settings.admin_key)
        flows = Flows(api, sink)
        await flows.job("race")
        workflows = [await flows.create(f"race-{i}", step("a", "race"), cron="* * * * *") for i in range(20)]
        conn = await asyncpg.connect(settings.database_url)
        try:
            # Test data: every schedule due now rather than at the next minute.
            await conn.execute("UPDATE workflows SET next_fire_time = now() - interval '1 second' WHERE cron <> ''")

            async def all_advanced() -> bool:
                return bool(await conn.fetchval("SELECT bool_and(next_fire_time > now()) FROM workflows"
                                                " WHERE cron <> ''"))
            await eventually(all_advanced, timeout=30)
        finally:
            await conn.close()
        started = 0
        for workflow in workflows:
            # One run per tick (a minute boundary passing meanwhile may add the next tick's run, once).
            keys = [r.idempotency_key for r in await flows.runs_of(workflow)]
            assert 1 <= len(keys) == len(set(keys)), (workflow.slug, keys)
            assert all(k.startswith("cron:") for k in keys), keys
            started += len(keys)
        # Each run's one step ran as exactly one job run.
        received = await sink.wait_for(started, "/race", timeout=30)
        assert len(received) == len({r.run_id for r in received}) == started
        await api.channel.close()


async def test_workflow_schedules_through_the_client(front: App, flows: Flows, make_app: AppFactory) -> None:
    await flows.job("client-job")
    async with AsyncClient(f"127.0.0.1:{front.port}", flows.api.key) as client:
        created = await client.workflows.create(
            "client-flow", [Step("a", job=JobStep(job_slug="client-job"))], cron="0 3 * * *", timezone="Asia/Tokyo",
            cron_overlap_policy="skip", schedule_input={"who": "cron"})
        assert (created.cron, created.timezone, created.cron_overlap_policy) == ("0 3 * * *", "Asia/Tokyo",
                                                                                 CronOverlapPolicy.SKIP)
        assert created.schedule_input == {"who": "cron"} and created.next_fire_time is not None
        times = await client.schedules.workflow_fire_times("client-flow", count=2)
        assert [t.astimezone(ZoneInfo("Asia/Tokyo")).hour for t in times] == [3, 3]
        assert times[0] == created.next_fire_time
        paused = await client.schedules.pause_workflow(created.id)
        assert paused.schedule_paused is True and paused.next_fire_time is None
        assert (await client.schedules.resume_workflow("client-flow")).next_fire_time == times[0]
        run = await client.schedules.trigger_workflow("client-flow")
        assert (run.workflow_id, run.input, run.idempotency_key) == (created.id, {"who": "cron"}, "")
        updated = await client.workflows.update("client-flow", cron="*/10 * * * *", schedule_input=None)
        assert updated.version == 1 and updated.schedule_input == {} and updated.cron == "*/10 * * * *"
        removed = await client.workflows.update("client-flow", cron=None)
        assert removed.cron == "" and removed.next_fire_time is None
        with pytest.raises(FailedPreconditionError):
            await client.schedules.pause_workflow("client-flow")
        with pytest.raises(NotFoundError):
            await client.schedules.trigger_workflow("no-such-flow")
