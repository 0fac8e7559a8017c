"""The job forms over HTTP: creating a job (each refusal beside its field, what was typed kept, a taken slug),
editing one (only the settings changed, a stale etag), deleting one (a stale etag, its runs canceled), each
needing the session's CSRF token and scoped to the signed-in project."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server.config import Settings
from strait_server.console.pages.job_edits import STALE_DELETE, STALE_EDIT, UNCHANGED
from strait_server.console.pages.jobs import SAVED
from tests.conftest import Api, AppFactory, connect
from tests.console.support import browserless

NOWHERE = "http://127.0.0.1:9/never"


def text_of(page: str) -> str:
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([:;,.)])", r"\1", text)


def field_value(page: str, field_id: str) -> str:
    """The value of the input or textarea `field_id` as the page holds it."""
    found = (re.search(rf'<input id="{field_id}"[^>]*value="([^"]*)"', page)
             or re.search(rf'<textarea id="{field_id}"[^>]*>(.*?)</textarea>', page, re.S))
    assert found, f"no field {field_id}"
    return html.unescape(found.group(1))


def problem_of(page: str, field_id: str) -> str:
    """What the page says is wrong with the field `field_id` ("" when nothing)."""
    found = re.search(rf'<p class="problem" role="alert" id="{field_id}-error">(.*?)</p>', page, re.S)
    return text_of(found.group(1)) if found else ""


def invalid(page: str, field_id: str) -> bool:
    tag = re.search(rf'<(?:input|textarea) id="{field_id}"[^>]*>', page)
    assert tag, f"no field {field_id}"
    return 'aria-invalid="true"' in tag.group(0) and f"{field_id}-error" in tag.group(0)


def is_open(page: str, details_id: str) -> bool:
    tag = re.search(rf'<details [^>]*id="{details_id}"[^>]*>', page)
    assert tag, f"no details {details_id}"
    return tag.group(0).endswith(" open>")


async def get_job(api: Api, slug: str) -> job_pb2.Job:
    got = await api.jobs.GetJob(job_pb2.GetJobRequest(slug=slug), metadata=api.metadata)
    return got.job


async def job_slugs(api: Api) -> list[str]:
    listed = await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.metadata)
    return [j.slug for j in listed.jobs]


def create_form(**fields: str) -> dict[str, str]:
    return {"slug": "", "mode": "http", "endpoint_url": "", "queue": "", "max_attempts": "", "timeout": "",
            "description": "", **fields}


async def test_creating_a_job_shows_each_refusal_beside_its_field_and_keeps_what_was_typed(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs")
            assert status == 200 and is_open(page, "create")  # no job yet: the form is there to use
            token = await b.csrf("/jobs")
            good = create_form(slug="hello", endpoint_url=NOWHERE)
            status, _, _ = await b.post("/jobs", good)
            assert status == 403
            status, _, _ = await b.post("/jobs", {**good, "csrf_token": token},
                                        headers={"Origin": "http://evil.example"})
            assert status == 403
            assert await job_slugs(api) == []

            # What the API cannot take as typed is refused by the form, before anything is sent.
            typed = create_form(slug="Hello World", endpoint_url="ftp://example.com/<x>", max_attempts="three",
                                timeout="soon", description="Says hello")
            status, page, _ = await b.post("/jobs", {**typed, "csrf_token": token})
            assert status == 400 and is_open(page, "create")
            assert problem_of(page, "new-max_attempts") == "Max attempts must be a whole number between 1 and 100"
            assert problem_of(page, "new-timeout") == "Timeout per attempt must be a duration such as 30s, 5m or 1h 30m"
            assert invalid(page, "new-max_attempts") and invalid(page, "new-timeout")
            for name in ("slug", "endpoint_url", "max_attempts", "timeout", "description"):
                assert field_value(page, f"new-{name}") == typed[name], name

            # The API's violations, each beside the field it names.
            typed = {**typed, "max_attempts": "0"}
            status, page, _ = await b.post("/jobs", {**typed, "csrf_token": token})
            assert problem_of(page, "new-max_attempts") == "Max attempts must be a whole number between 1 and 100"
            typed = {**typed, "max_attempts": "4", "timeout": "25h"}
            status, page, _ = await b.post("/jobs", {**typed, "csrf_token": token})
            assert status == 400
            assert problem_of(page, "new-slug").startswith("Slug must be 1-128 characters of a-z, 0-9")
            assert problem_of(page, "new-endpoint_url") == "Endpoint URL must be an http or https URL"
            assert problem_of(page, "new-timeout") == "Timeout per attempt must be between 1s and 24h"
            assert problem_of(page, "new-max_attempts") == "" and not invalid(page, "new-description")
            assert invalid(page, "new-slug") and invalid(page, "new-endpoint_url")
            assert field_value(page, "new-endpoint_url") == "ftp://example.com/<x>"
            assert field_value(page, "new-max_attempts") == "4"
            assert await job_slugs(api) == []

            # Accepted: the job's page, with the settings typed.
            typed = {**typed, "slug": "hello", "endpoint_url": NOWHERE, "timeout": "1m 30s"}
            status, _, location = await b.post("/jobs", {**typed, "csrf_token": token})
            assert status == 303 and location == "/jobs/hello"
            job = await get_job(api, "hello")
            assert (job.endpoint_url, job.max_attempts, job.timeout.ToTimedelta(), job.description,
                    job.execution_mode) == (NOWHERE, 4, timedelta(seconds=90), "Says hello",
                                            job_pb2.EXECUTION_MODE_HTTP)
            status, page = await b.get(location)
            assert status == 200 and "Attempts up to 4" in text_of(page)

            # The slug is taken now: said beside it, the rest kept.
            status, page, _ = await b.post("/jobs", {**typed, "csrf_token": token})
            assert status == 409 and is_open(page, "create")
            assert problem_of(page, "new-slug") == "Slug is taken by another job of this project"
            assert field_value(page, "new-timeout") == "1m 30s"
            assert await job_slugs(api) == ["hello"]

            # A worker job: its queue is sent, not the endpoint typed before switching; empty settings are the
            # API's defaults.
            worker = create_form(slug="resize", mode="worker", endpoint_url=NOWHERE, queue="images")
            status, _, location = await b.post("/jobs", {**worker, "csrf_token": token})
            assert status == 303 and location == "/jobs/resize"
            job = await get_job(api, "resize")
            assert (job.execution_mode, job.queue, job.endpoint_url, job.max_attempts,
                    job.timeout.ToTimedelta()) == (job_pb2.EXECUTION_MODE_WORKER, "images", "", 3,
                                                   timedelta(minutes=5))
            status, page = await b.get("/jobs")
            assert not is_open(page, "create")  # jobs are listed: the form waits to be opened
    finally:
        await api.channel.close()


async def test_editing_a_job_saves_the_settings_changed_and_nothing_else(make_app: AppFactory,
                                                                         settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        await api.create_job("report", NOWHERE, max_attempts=2, timeout=Duration(seconds=1, nanos=500_000_000),
                             description="Weekly numbers", tags={"team": "finance"},
                             retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED))
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs/report")
            assert status == 200 and not is_open(page, "edit")
            shown = {name: field_value(page, f"edit-{name}")
                     for name in ("endpoint_url", "max_attempts", "timeout", "description")}
            assert shown == {"endpoint_url": NOWHERE, "max_attempts": "2", "timeout": "1.5s",
                             "description": "Weekly numbers"}
            etag = re.search(r'action="/jobs/report/edit".*?name="etag" value="([^"]+)"', page, re.S)
            assert etag
            token = await b.csrf("/jobs/report")
            moved = "http://127.0.0.1:9/report"
            form = {**shown, "endpoint_url": moved, "etag": etag.group(1)}
            status, _, _ = await b.post("/jobs/report/edit", form)
            assert status == 403
            assert (await get_job(api, "report")).endpoint_url == NOWHERE

            # Nothing changed: nothing is sent.
            status, page, _ = await b.post("/jobs/report/edit", {**shown, "etag": etag.group(1), "csrf_token": token})
            assert status == 200 and UNCHANGED in text_of(page)

            status, _, location = await b.post("/jobs/report/edit", {**form, "csrf_token": token})
            assert status == 303 and location == "/jobs/report?saved=1"
            job = await get_job(api, "report")
            assert job.endpoint_url == moved
            assert (job.max_attempts, job.timeout.ToTimedelta(), job.description, dict(job.tags),
                    job.retry_policy.strategy) == (2, timedelta(seconds=1.5), "Weekly numbers", {"team": "finance"},
                                                   job_pb2.RETRY_STRATEGY_FIXED)
            status, page = await b.get(location)
            assert SAVED in text_of(page) and f"Endpoint {moved}" in text_of(page)
            assert field_value(page, "edit-endpoint_url") == moved

            # Refused by the form (a zero), then by the API (a scheme it does not dispatch to): beside the fields,
            # the form open with what was typed, the job unchanged.
            etag = re.search(r'action="/jobs/report/edit".*?name="etag" value="([^"]+)"', page, re.S)
            assert etag
            typed = {"endpoint_url": "ftp://example.com/report", "max_attempts": "0", "timeout": "2m",
                     "description": "", "etag": etag.group(1), "csrf_token": token}
            status, page, _ = await b.post("/jobs/report/edit", typed)
            assert status == 400 and is_open(page, "edit")
            assert problem_of(page, "edit-max_attempts") == "Max attempts must be a whole number between 1 and 100"
            status, page, _ = await b.post("/jobs/report/edit", {**typed, "max_attempts": "5"})
            assert status == 400 and is_open(page, "edit")
            assert problem_of(page, "edit-endpoint_url") == "Endpoint URL must be an http or https URL"
            assert invalid(page, "edit-endpoint_url") and not invalid(page, "edit-timeout")
            assert [field_value(page, f"edit-{n}") for n in ("endpoint_url", "max_attempts", "timeout")] == [
                "ftp://example.com/report", "5", "2m"]
            assert await get_job(api, "report") == job

            # An emptied field is the API's default.
            status, _, _ = await b.post("/jobs/report/edit", {**typed, "endpoint_url": moved, "max_attempts": "",
                                                              "timeout": "", "description": "Weekly numbers"})
            assert status == 303
            job = await get_job(api, "report")
            assert (job.max_attempts, job.timeout.ToTimedelta()) == (3, timedelta(minutes=5))

            # Someone else changes the job meanwhile: nothing is saved, even once a refused form is corrected and
            # sent again; the page shows the job as it is now and what the form held that was not saved.
            await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=job.id, description="Numbers, every Monday"),
                update_mask=FieldMask(paths=["description"])), metadata=api.metadata)
            typed = {"endpoint_url": moved, "max_attempts": "seven", "timeout": "5m", "description": "Weekly numbers",
                     "etag": job.etag, "csrf_token": token}
            status, page, _ = await b.post("/jobs/report/edit", typed)
            assert status == 400
            etag = re.search(r'action="/jobs/report/edit".*?name="etag" value="([^"]+)"', page, re.S)
            assert etag and etag.group(1) == job.etag
            status, page, _ = await b.post("/jobs/report/edit", {**typed, "max_attempts": "7"})
            assert status == 409 and STALE_EDIT in text_of(page) and is_open(page, "edit")
            unsaved = re.search(r'<div class="problem" id="edit-unsaved">(.*?)</div>', page, re.S)
            assert unsaved and text_of(unsaved.group(1)) == ("Your changes, not saved: Max attempts: 7 "
                                                             "Description: Weekly numbers")
            assert field_value(page, "edit-description") == "Numbers, every Monday"
            assert field_value(page, "edit-max_attempts") == "3"
            assert (await get_job(api, "report")).max_attempts == 3
    finally:
        await api.channel.close()


async def test_a_worker_jobs_edit_form_changes_its_queue(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("resize", "", execution_mode=job_pb2.EXECUTION_MODE_WORKER, queue="images")
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs/resize")
            assert field_value(page, "edit-queue") == "images" and 'id="edit-endpoint_url"' not in page
            token = await b.csrf("/jobs/resize")
            form = {"queue": "bad queue!", "max_attempts": "3", "timeout": "5m", "description": "",
                    "etag": job.etag, "csrf_token": token}
            status, page, _ = await b.post("/jobs/resize/edit", form)
            assert status == 400 and problem_of(page, "edit-queue").startswith("Queue must be 1-63 characters")
            status, _, _ = await b.post("/jobs/resize/edit", {**form, "queue": "thumbnails"})
            assert status == 303
            assert (await get_job(api, "resize")).queue == "thumbnails"
    finally:
        await api.channel.close()


async def test_deleting_a_job_needs_the_csrf_token_and_the_current_etag_and_cancels_its_runs(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("cleanup", NOWHERE)
        await api.create_job("keeper", NOWHERE)
        later = Timestamp()
        later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        run = await api.trigger(job, scheduled_time=later)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs/cleanup")
            assert not is_open(page, "delete") and "Delete job cleanup</button>" in page
            token = await b.csrf("/jobs/cleanup")
            status, _, _ = await b.post("/jobs/cleanup/delete", {"etag": job.etag})
            assert status == 403

            await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=job.id, description="changed"), update_mask=FieldMask(paths=["description"])),
                metadata=api.metadata)
            status, page, _ = await b.post("/jobs/cleanup/delete", {"etag": job.etag, "csrf_token": token})
            assert status == 409 and STALE_DELETE in text_of(page) and "changed" in text_of(page)
            assert sorted(await job_slugs(api)) == ["cleanup", "keeper"]

            current = await get_job(api, "cleanup")
            status, _, location = await b.post("/jobs/cleanup/delete", {"etag": current.etag, "csrf_token": token})
            assert status == 303 and location == "/jobs?deleted=cleanup"
            status, page = await b.get(location)
            assert "Job cleanup was deleted, and its unfinished runs canceled." in text_of(page)
            assert 'href="/jobs/cleanup"' not in page
            assert await job_slugs(api) == ["keeper"]
            assert (await api.get_run(run.id)).status == run_pb2.RUN_STATUS_CANCELED
            status, page = await b.get("/jobs?deleted=keeper")  # not what happened: not said
            assert "was deleted" not in page
            status, _ = await b.get("/jobs/cleanup")
            assert status == 404
    finally:
        await api.channel.close()


async def test_another_projects_job_cannot_be_edited_or_deleted(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    mine, theirs = await connect(app, settings.admin_key), await connect(app, settings.admin_key)
    try:
        await mine.create_job("mine", NOWHERE)
        their_job = await theirs.create_job("theirs", NOWHERE)
        async with browserless(app) as b:
            await b.sign_in(mine.key)
            token = await b.csrf("/jobs/mine")
            for path in ("/jobs/theirs/edit", f"/jobs/{their_job.id}/edit"):
                status, _, _ = await b.post(path, {"endpoint_url": "http://127.0.0.1:9/mine", "max_attempts": "3",
                                                   "timeout": "5m", "description": "", "etag": their_job.etag,
                                                   "csrf_token": token})
                assert status == 404, path
            status, _, _ = await b.post("/jobs/theirs/delete", {"etag": their_job.etag, "csrf_token": token})
            assert status == 404
            assert await get_job(theirs, "theirs") == their_job
            # A slug taken in another project is free in this one.
            status, _, location = await b.post("/jobs", {**create_form(slug="theirs", endpoint_url=NOWHERE),
                                                         "csrf_token": token})
            assert status == 303 and location == "/jobs/theirs"
            with pytest.raises(grpc.aio.AioRpcError):
                await get_job(theirs, "mine")
    finally:
        await mine.channel.close()
        await theirs.channel.close()
