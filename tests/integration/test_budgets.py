"""Project budgets: runs report costs; a spent budget rejects new runs (reject) or is only counted (notify)."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2, status_pb2

from strait_client.v1 import job_pb2, project_pb2, run_context_pb2, run_context_pb2_grpc, run_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect
from tests.sink import Received, Reply, Sink
from tests.support import FakeClock, scheduler_passes

S = run_pb2


async def _set_budget(api: Api, project_id: str, budget: int | None, action: int) -> project_pb2.Project:
    project = project_pb2.Project(id=project_id, budget_action=action)
    if budget is not None:
        project.monthly_budget_microusd = budget
    resp = await api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project, update_mask=FieldMask(paths=["monthly_budget_microusd", "budget_action"])),
        metadata=api.admin_metadata)
    return resp.project


async def _report(api: Api, request: Received, cost: int) -> run_context_pb2.ReportCostResponse:
    stub = run_context_pb2_grpc.RunContextServiceStub(api.channel)
    return await stub.ReportCost(run_context_pb2.ReportCostRequest(cost_microusd=cost), metadata=(
        ("authorization", f"Bearer {request.headers['X-Run-Token']}"),))


async def _spend(api: Api, job: job_pb2.Job, sink: Sink, path: str, *costs: int) -> list[int]:
    """One run per cost, each reporting it from its own code; returns the spend after each report."""
    spent = []
    for cost in costs:
        async def job_code(request: Received, cost: int = cost) -> None:
            spent.append((await _report(api, request, cost)).month_to_date_spend_microusd)
        sink.script(path, Reply(action=job_code))
        run = await api.trigger(job)
        await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    return spent


def _error_info(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo]:
    status = status_pb2.Status.FromString(dict(err.trailing_metadata() or ())["grpc-status-details-bin"])
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert any(d.Unpack(info) for d in status.details) and any(d.Unpack(retry) for d in status.details)
    return info, retry


async def test_a_spent_budget_with_reject_refuses_new_runs_and_writes_nothing(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app: App = await make_app()
    api = await connect(app, settings.admin_key)
    job = await api.create_job("costly", sink.url("/costly"))
    project = await _set_budget(api, job.project_id, 1_000, project_pb2.BUDGET_ACTION_REJECT)
    assert project.monthly_budget_microusd == 1_000 and project.budget_action == project_pb2.BUDGET_ACTION_REJECT

    assert await _spend(api, job, sink, "/costly", 600, 500) == [600, 1_100]
    runs = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert sorted(r.cost_microusd for r in runs.runs) == [500, 600]
    costs = [e for e in await api.events(runs.runs[0].id) if e.type == "cost"]
    assert [json.loads(e.data_json)["cost_microusd"] for e in costs] == [runs.runs[0].cost_microusd]

    before = len(runs.runs)
    calls = [api.trigger(job),
             api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions()]),
                                      metadata=api.metadata),
             api.runs.ReplayRun(run_pb2.ReplayRunRequest(id=runs.runs[0].id), metadata=api.metadata)]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, retry = _error_info(err.value)
        assert info.reason == "PROJECT_BUDGET_EXHAUSTED" and retry.retry_delay.seconds > 0
    after = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert len(after.runs) == before

    got = await api.projects.GetProject(project_pb2.GetProjectRequest(id=job.project_id), metadata=api.metadata)
    assert got.project.month_to_date_spend_microusd == 1_100
    # Raising the budget lets runs through again at once.
    await _set_budget(api, job.project_id, 5_000, project_pb2.BUDGET_ACTION_REJECT)
    run = await api.trigger(job)
    assert run.id
    await api.channel.close()


async def test_notify_keeps_accepting_runs(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app: App = await make_app()
    api = await connect(app, settings.admin_key)
    job = await api.create_job("notified", sink.url("/notified"))
    await _set_budget(api, job.project_id, 100, project_pb2.BUDGET_ACTION_NOTIFY)
    assert await _spend(api, job, sink, "/notified", 150) == [150]
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    await api.channel.close()


async def test_only_the_admin_sets_budgets_and_bad_costs_are_refused(api: Api, sink: Sink) -> None:
    job = await api.create_job("guarded", sink.url("/guarded"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(id=job.project_id, monthly_budget_microusd=10),
            update_mask=FieldMask(paths=["monthly_budget_microusd"])), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _set_budget(api, job.project_id, -5, project_pb2.BUDGET_ACTION_REJECT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    received: list[grpc.StatusCode] = []

    async def job_code(request: Received) -> None:
        for cost in (0, -1):
            try:
                await _report(api, request, cost)
            except grpc.aio.AioRpcError as e:
                received.append(e.code())
    sink.script("/guarded", Reply(action=job_code))
    run = await api.trigger(job)
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert received == [grpc.StatusCode.INVALID_ARGUMENT] * 2 and done.cost_microusd == 0


@pytest.mark.parametrize("overlap", [job_pb2.CRON_OVERLAP_POLICY_ALLOW, job_pb2.CRON_OVERLAP_POLICY_SKIP])
async def test_cron_ticks_are_skipped_while_the_budget_rejects(make_app: AppFactory, settings: Settings,
                                                               sink: Sink, overlap: int) -> None:
    """Whichever way the tick fires (one statement for jobs that allow overlap, a look at active runs first
    for the others), the budget rule is the triggers' one."""
    from datetime import UTC, timedelta

    from strait_server.app import Role

    front = await make_app(frozenset({Role.API, Role.WORKER}))
    api = await connect(front, settings.admin_key)
    job = await api.create_job("nightly", sink.url("/nightly"), cron="* * * * *", cron_overlap_policy=overlap)
    await _set_budget(api, job.project_id, 10, project_pb2.BUDGET_ACTION_REJECT)
    await _spend(api, job, sink, "/nightly", 10)
    clock = FakeClock()
    scheduler = await make_app(frozenset({Role.SCHEDULER}), clock=clock, cron_interval=timedelta(milliseconds=50))
    clock.now = job.next_fire_time.ToDatetime(tzinfo=UTC) + timedelta(seconds=1)
    await scheduler_passes([scheduler], 3)
    runs = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert [r.metadata.get("triggered_by", "") for r in runs.runs] == [""]  # only the manual run
    got = await api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata)
    assert got.job.next_fire_time.ToDatetime(tzinfo=UTC) > clock.now  # the tick passed, skipped
    await api.channel.close()


async def test_an_update_changes_only_the_budget_fields_it_names(api: Api, sink: Sink) -> None:
    job = await api.create_job("partial", sink.url("/partial"))
    await _set_budget(api, job.project_id, 1_000, project_pb2.BUDGET_ACTION_REJECT)
    resp = await api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=job.project_id, budget_action=project_pb2.BUDGET_ACTION_NOTIFY),
        update_mask=FieldMask(paths=["budget_action"])), metadata=api.admin_metadata)
    assert resp.project.monthly_budget_microusd == 1_000
    assert resp.project.budget_action == project_pb2.BUDGET_ACTION_NOTIFY
    resp = await api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=job.project_id), update_mask=FieldMask(paths=["monthly_budget_microusd"])),
        metadata=api.admin_metadata)
    assert not resp.project.HasField("monthly_budget_microusd")  # unset in the update: no budget
    assert resp.project.budget_action == project_pb2.BUDGET_ACTION_NOTIFY


async def test_one_run_cannot_report_more_than_its_cap(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    """One ReportCost(10^12) from one run's token used to spend the project's budget for the rest of the month."""
    app = await make_app(max_run_cost_microusd=5_000)
    api = await connect(app, settings.admin_key)
    job = await api.create_job("capped", sink.url("/capped"))
    await _set_budget(api, job.project_id, 1_000_000, project_pb2.BUDGET_ACTION_REJECT)
    outcomes: list[object] = []

    async def job_code(request: Received) -> None:
        for cost in (3_000, 2_000, 1, 10**12):
            try:
                outcomes.append((await _report(api, request, cost)).run_cost_microusd)
            except grpc.aio.AioRpcError as err:
                outcomes.append(err.code())
    sink.script("/capped", Reply(action=job_code))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    # Up to the server's cap in all, then refused, and the refusals spent nothing.
    assert outcomes == [3_000, 5_000, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert (await api.get_run(run.id)).cost_microusd == 5_000
    # The project's budget is untouched by the refused reports: new runs are accepted.
    await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_COMPLETED)

    # A job may set a cap of its own, above or below the server's.
    updated = await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job_pb2.Job(id=job.id, max_run_cost_microusd=10_000), update_mask=FieldMask(
            paths=["max_run_cost_microusd"])), metadata=api.metadata)
    assert updated.job.max_run_cost_microusd == 10_000
    outcomes.clear()

    async def bigger(request: Received) -> None:
        outcomes.append((await _report(api, request, 9_000)).run_cost_microusd)
    sink.script("/capped", Reply(action=bigger))
    await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_COMPLETED)
    assert outcomes == [9_000]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.create_job("bad-cap", sink.url("/x"), max_run_cost_microusd=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
