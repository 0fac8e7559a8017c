"""The API's promises: precise statuses with details, nothing written on rejection, tenancy, paging."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from strait_client.v1 import job_pb2, project_pb2, run_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect
from tests.sink import Sink

ROOT = Path(__file__).resolve().parents[2]


def details(err: grpc.aio.AioRpcError) -> dict[str, object]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "every error carries google.rpc.Status details"
    out: dict[str, object] = {}
    for any_ in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.ResourceInfo,
                    error_details_pb2.PreconditionFailure):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                out[cls.__name__] = msg
    return out


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    bad = details(err)["BadRequest"]
    return {v.field: v.description for v in bad.field_violations}  # type: ignore[attr-defined]


async def _error(coro: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro  # type: ignore[misc]
    return err.value


async def _job_count(api: Api) -> int:
    return len((await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.metadata)).jobs)


@pytest.mark.parametrize(("job", "field"), [
    (job_pb2.Job(slug="Bad Slug", endpoint_url="http://e.com/x"), "job.slug"),
    (job_pb2.Job(slug="ok", endpoint_url="ftp://e.com/x"), "job.endpoint_url"),
    (job_pb2.Job(slug="ok"), "job.endpoint_url"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", max_attempts=101), "job.max_attempts"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", priority=11), "job.priority"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", timeout=Duration(seconds=0)), "job.timeout"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", timeout=Duration(seconds=90_000)), "job.timeout"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", signing_secret="short"), "job.signing_secret"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", execution_mode=job_pb2.EXECUTION_MODE_WORKER),
     "job.endpoint_url"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", execution_mode=7), "job.execution_mode"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", retry_policy=job_pb2.RetryPolicy(
        initial_delay=Duration(seconds=10), max_delay=Duration(seconds=1))), "job.retry_policy.max_delay"),
    (job_pb2.Job(slug="ok", endpoint_url="http://e.com", queue="no spaces"), "job.queue"),
])
async def test_invalid_job_is_rejected_with_field_violation_and_nothing_written(
        api: Api, job: job_pb2.Job, field: str) -> None:
    err = await _error(api.jobs.CreateJob(job_pb2.CreateJobRequest(job=job), metadata=api.metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err)
    assert details(err)["ErrorInfo"].domain == "strait.dev"  # type: ignore[attr-defined]
    assert await _job_count(api) == 0


async def test_private_endpoints_refused_unless_allowed(make_app: AppFactory, settings: Settings) -> None:
    strict = await make_app(allow_private_endpoints=False)
    api = await connect(strict, settings.admin_key)
    err = await _error(api.create_job("p", "http://127.0.0.1:8080/x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "private" in violations(err)["job.endpoint_url"]
    await api.channel.close()


@pytest.mark.parametrize(("options", "field"), [
    (job_pb2.RunOptions(payload_json="[1, 2]"), "options.payload_json"),
    (job_pb2.RunOptions(payload_json="{not json"), "options.payload_json"),
    (job_pb2.RunOptions(payload_json='{"a": NaN}'), "options.payload_json"),
    (job_pb2.RunOptions(payload_json='{"a": "' + "x" * (1024 * 1024) + '"}'), "options.payload_json"),
    (job_pb2.RunOptions(priority=-1), "options.priority"),
    (job_pb2.RunOptions(max_attempts=0), "options.max_attempts"),
    (job_pb2.RunOptions(idempotency_key="k" * 300), "options.idempotency_key"),
])
async def test_invalid_trigger_is_rejected_and_creates_no_run(api: Api, sink: Sink, options: job_pb2.RunOptions,
                                                              field: str) -> None:
    job = await api.create_job("t", sink.script("/t"))
    err = await _error(api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, options=options),
                                           metadata=api.metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err)
    runs = await api.runs.ListRuns(run_pb2.ListRunsRequest(), metadata=api.metadata)
    assert list(runs.runs) == []


async def test_schedule_too_far_ahead_and_batch_limits(api: Api, sink: Sink) -> None:
    job = await api.create_job("t", sink.script("/t"))
    far = Timestamp()
    far.FromDatetime(datetime.now(UTC) + timedelta(days=31))
    err = await _error(api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(scheduled_time=far)), metadata=api.metadata))
    assert "options.scheduled_time" in violations(err)
    err = await _error(api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions()] * 1001), metadata=api.metadata))
    assert "runs" in violations(err)
    err = await _error(api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions(), job_pb2.RunOptions(payload_json="1")]), metadata=api.metadata))
    assert "runs[1].payload_json" in violations(err)
    assert list((await api.runs.ListRuns(run_pb2.ListRunsRequest(), metadata=api.metadata)).runs) == []


async def test_duplicate_slug_already_exists_with_resource_info(api: Api, sink: Sink) -> None:
    await api.create_job("dup", sink.script("/a"))
    err = await _error(api.create_job("dup", sink.script("/b")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    info = details(err)["ResourceInfo"]
    assert info.resource_type == "job" and info.resource_name == "dup"  # type: ignore[attr-defined]


async def test_other_projects_resources_are_not_found(app: App, api: Api, settings: Settings, sink: Sink) -> None:
    job = await api.create_job("mine", sink.script("/mine"))
    run = await api.trigger(job)
    other = await connect(app, settings.admin_key)
    for call in (other.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=other.metadata),
                 other.jobs.GetJob(job_pb2.GetJobRequest(slug="mine"), metadata=other.metadata),
                 other.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id), metadata=other.metadata),
                 other.runs.GetRun(run_pb2.GetRunRequest(id=run.id), metadata=other.metadata),
                 other.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id), metadata=other.metadata),
                 other.runs.ListRunEvents(run_pb2.ListRunEventsRequest(run_id=run.id), metadata=other.metadata),
                 other.projects.GetProject(project_pb2.GetProjectRequest(id=job.project_id),
                                           metadata=other.metadata)):
        err = await _error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert details(err)["ErrorInfo"].reason.endswith("_NOT_FOUND")  # type: ignore[attr-defined]
    await other.channel.close()


async def test_admin_key_and_project_key_scopes(api: Api) -> None:
    err = await _error(api.projects.CreateProject(project_pb2.CreateProjectRequest(slug="nope"),
                                                  metadata=api.metadata))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await _error(api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.admin_metadata))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await _error(api.projects.CreateProject(project_pb2.CreateProjectRequest(slug="Bad!"),
                                                  metadata=api.admin_metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_api_key_lifecycle(app: App, api: Api) -> None:
    created = await api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(name="ci"), metadata=api.metadata)
    assert created.secret.startswith("strait_") and created.api_key.key_prefix == created.secret[:12]
    listed = await api.projects.ListApiKeys(project_pb2.ListApiKeysRequest(), metadata=api.metadata)
    assert created.api_key.id in {k.id for k in listed.api_keys}
    assert all(not hasattr(k, "secret") for k in listed.api_keys)
    new_key = (("authorization", f"Bearer {created.secret}"),)
    await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=new_key)
    revoked = await api.projects.RevokeApiKey(project_pb2.RevokeApiKeyRequest(id=created.api_key.id),
                                              metadata=api.metadata)
    assert revoked.api_key.HasField("revoke_time")
    err = await _error(api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=new_key))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_update_with_field_mask_and_etag(api: Api, sink: Sink) -> None:
    job = await api.create_job("upd", sink.script("/a"), name="Original", max_attempts=5, tags={"team": "a"})
    resp = await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job_pb2.Job(id=job.id, endpoint_url=sink.script("/b"), name="ignored"),
        update_mask=FieldMask(paths=["endpoint_url"])), metadata=api.metadata)
    updated = resp.job
    assert updated.endpoint_url.endswith("/b") and updated.name == "Original" and updated.max_attempts == 5
    assert updated.etag != job.etag and dict(updated.tags) == {"team": "a"}
    stale = await _error(api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job_pb2.Job(id=job.id, priority=3, etag=job.etag), update_mask=FieldMask(paths=["priority"])),
        metadata=api.metadata))
    assert stale.code() == grpc.StatusCode.ABORTED
    bad = await _error(api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job_pb2.Job(id=job.id), update_mask=FieldMask(paths=["id"])), metadata=api.metadata))
    assert "update_mask" in violations(bad)
    disabled = (await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job_pb2.Job(slug="upd", enabled=False), update_mask=FieldMask(paths=["enabled"])),
        metadata=api.metadata)).job
    assert disabled.enabled is False
    err = await _error(api.trigger(disabled))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_delete_job_cancels_pending_runs_and_frees_slug(api: Api, sink: Sink) -> None:
    job = await api.create_job("gone", sink.script("/gone"))
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    run = await api.trigger(job, scheduled_time=later)
    await api.jobs.DeleteJob(job_pb2.DeleteJobRequest(id=job.id), metadata=api.metadata)
    assert (await api.get_run(run.id)).status == run_pb2.RUN_STATUS_CANCELED
    err = await _error(api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    again = await api.create_job("gone", sink.script("/gone"))
    assert again.id != job.id


async def test_pagination_walks_every_item_once_and_rejects_foreign_tokens(api: Api, sink: Sink) -> None:
    for i in range(7):
        await api.create_job(f"j{i}", sink.script("/p"))
    seen: list[str] = []
    token = ""
    while True:
        page = await api.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=3, page_token=token), metadata=api.metadata)
        seen.extend(j.slug for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"j{i}" for i in range(7)]
    first = await api.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=3), metadata=api.metadata)
    err = await _error(api.runs.ListRuns(run_pb2.ListRunsRequest(page_token=first.next_page_token),
                                         metadata=api.metadata))
    assert "page_token" in violations(err)
    err = await _error(api.jobs.ListJobs(job_pb2.ListJobsRequest(page_token="garbage"), metadata=api.metadata))
    assert "page_token" in violations(err)
    err = await _error(api.jobs.ListJobs(job_pb2.ListJobsRequest(page_size=-1), metadata=api.metadata))
    assert "page_size" in violations(err)


async def test_list_runs_filters(api: Api, sink: Sink) -> None:
    a = await api.create_job("a", sink.script("/a"))
    b = await api.create_job("b", sink.script("/b"))
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    ra = await api.trigger(a, scheduled_time=later)
    rb = await api.trigger(b, scheduled_time=later)
    by_job = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=a.id), metadata=api.metadata)
    assert [r.id for r in by_job.runs] == [ra.id]
    # The job filter takes the slug too, and a slug no job has is NOT_FOUND rather than an empty list.
    by_slug = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id="a", page_size=1), metadata=api.metadata)
    assert [r.id for r in by_slug.runs] == [ra.id]
    err = await _error(api.runs.ListRuns(run_pb2.ListRunsRequest(job_id="nope"), metadata=api.metadata))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope" in (err.details() or "")
    feed = api.runs.WatchRuns(run_pb2.WatchRunsRequest(job_id="nope"), metadata=api.metadata)
    assert (await _error(feed.read())).code() == grpc.StatusCode.NOT_FOUND
    delayed = await api.runs.ListRuns(run_pb2.ListRunsRequest(statuses=[run_pb2.RUN_STATUS_DELAYED]),
                                      metadata=api.metadata)
    assert {r.id for r in delayed.runs} == {ra.id, rb.id}
    none = await api.runs.ListRuns(run_pb2.ListRunsRequest(create_time_after=later), metadata=api.metadata)
    assert list(none.runs) == []
    err = await _error(api.runs.ListRuns(run_pb2.ListRunsRequest(statuses=[99]), metadata=api.metadata))
    assert "statuses[0]" in violations(err)


async def test_list_runs_by_tags_keeps_the_runs_carrying_every_tag_and_pages_within_the_filter(api: Api,
                                                                                           sink: Sink) -> None:
    job = await api.create_job("tagged", sink.script("/t"), tags={"team": "billing"})
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    eu = [await api.trigger(job, scheduled_time=later, tags={"region": "eu"}) for _ in range(3)]
    us = await api.trigger(job, scheduled_time=later, tags={"region": "us"})

    async def listed(tags: dict[str, str], page_size: int = 0, token: str = "") -> run_pb2.ListRunsResponse:
        return await api.runs.ListRuns(run_pb2.ListRunsRequest(tags=tags, page_size=page_size, page_token=token),
                                       metadata=api.metadata)
    # The job's tags are the run's too; every tag asked for must match.
    assert {r.id for r in (await listed({"team": "billing"})).runs} == {r.id for r in [*eu, us]}
    assert [r.id for r in (await listed({"team": "billing", "region": "us"})).runs] == [us.id]
    assert list((await listed({"team": "billing", "region": "asia"})).runs) == []
    first = await listed({"region": "eu"}, page_size=2)
    second = await listed({"region": "eu"}, page_size=2, token=first.next_page_token)
    assert [r.id for r in [*first.runs, *second.runs]] == [r.id for r in reversed(eu)] and not second.next_page_token
    # A page token belongs to its filter.
    err = await _error(listed({"region": "us"}, token=first.next_page_token))
    assert "page_token" in violations(err)
    err = await _error(listed({f"k{i}": "v" for i in range(21)}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "tags" in violations(err)


async def test_health_and_reflection_need_no_key(app: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        resp = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="strait.v1.JobService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = set()
        async for r in responses:
            names.update(s.name for s in r.list_services_response.service)
        assert {"strait.v1.ProjectService", "strait.v1.JobService", "strait.v1.RunService",
                "grpc.health.v1.Health"} <= names


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout, result.stderr) == ("generated code is up to date\n", "")  # one line, no chatter


async def test_a_thousand_field_violations_still_reach_the_client_summed_up(api: Api, sink: Sink) -> None:
    """Details travel in a header, and gRPC refuses headers over 16 KiB: the list is cut, with a count."""
    job = await api.create_job("many", sink.script("/many"))
    err = await _error(api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions(payload_json="1")] * 1000), metadata=api.metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = details(err)["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    listed = [v.field for v in bad.field_violations]
    assert listed[:2] == ["runs[0].payload_json", "runs[1].payload_json"]
    assert bad.field_violations[-1].description == f"{1000 - len(listed) + 1} more violations not listed"
    assert "and 995 more" in (err.details() or "")
    assert list((await api.runs.ListRuns(run_pb2.ListRunsRequest(), metadata=api.metadata)).runs) == []
