"""The jobs pages over HTTP: listing and paging jobs, a job's settings, recent runs and success
rate, triggering with a payload the API refuses, enabling and disabling (CSRF, stale etags), and project
scoping."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect
from tests.console.support import browserless
from tests.sink import Reply, Sink

S = run_pb2
NOWHERE = "http://127.0.0.1:9/never"  # nothing listens: runs of jobs pointing here are scheduled far ahead


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded, whitespace collapsed."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    return re.sub(r" ([:;,.)])", r"\1", text)


async def job_runs(api: Api, job: job_pb2.Job) -> list[run_pb2.Run]:
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    return list(listed.runs)


async def get_job(api: Api, job: job_pb2.Job) -> job_pb2.Job:
    got: job_pb2.GetJobResponse = await api.jobs.GetJob(job_pb2.GetJobRequest(id=job.id), metadata=api.metadata)
    return got.job


async def test_the_jobs_list_shows_each_jobs_mode_target_state_and_schedule_and_pages(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        await api.create_job("billing", "http://127.0.0.1:9/bill", cron="*/5 * * * *", timezone="Europe/Paris")
        await api.create_job("resize", "", execution_mode=job_pb2.EXECUTION_MODE_WORKER, queue="images",
                             enabled=False)
        for i in range(50):
            await api.create_job(f"filler-{i:02}", NOWHERE)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs")
            assert status == 200
            rows = re.findall(r'<tr id="job-[^"]+">(.*?)</tr>', page, re.S)
            assert len(rows) == 50
            first = text_of(rows[0]), text_of(rows[1])
            assert first == ("billing HTTP http://127.0.0.1:9/bill enabled */5 * * * * Europe/Paris",
                             "resize worker queue images disabled —")
            more = re.search(r'<a rel="next" href="(/jobs\?page_token=[^"]+)">More jobs</a>', page)
            assert more, page
            status, page = await b.get(html.unescape(more.group(1)))
            assert status == 200
            rows = re.findall(r'<tr id="job-[^"]+">(.*?)</tr>', page, re.S)
            assert [text_of(r).split()[0] for r in rows] == ["filler-48", "filler-49"]
            assert "More jobs" not in page and 'href="/jobs">First page' in page
    finally:
        await api.channel.close()


async def test_a_job_page_shows_its_settings_recent_runs_and_success_rate(make_app: AppFactory, settings: Settings,
                                                                          sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        url = sink.script("/ship", Reply(), Reply(status=500), Reply())
        job = await api.create_job(
            "ship", url, max_attempts=1, timeout=Duration(seconds=90), tags={"team": "parcels"},
            retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                             initial_delay=Duration(seconds=2)),
            max_concurrency=3, rate_limit_max=10, rate_limit_window=Duration(seconds=60),
            dedup_window=Duration(seconds=3600 + 1800))
        runs = []
        for i in range(3):  # one at a time, so that the sink answers them in order
            run = await api.trigger(job, payload_json=f'{{"parcel": {i}}}')
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, S.RUN_STATUS_DEAD_LETTER)
            runs.append(run)
        later = await api.trigger(job, scheduled_time=_hours_ahead(1))  # not finished: not counted
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/jobs/ship")
            assert status == 200
            text = text_of(page)
            for fact in ("Mode HTTP", f"Endpoint {url}", "Timeout per attempt 1m 30s", "Attempts up to 1",
                         "Strategy fixed delay", "First delay 2s", "Longest delay 1h",
                         "Concurrency 3 at once", "Concurrency per key no limit", "Start rate 10 runs per 1m",
                         "Deduplication window 1h 30m", "Debounce window off", "Cron none", "team=parcels"):
                assert fact in text, fact
            assert "67% succeeded: 2 of the 3 finished runs among the last 4 completed." in text
            for run in [*runs, later]:
                assert f'href="/runs/{run.id}"' in page
            assert 'badge bad">dead letter' in page and 'badge ok">completed' in page
            # The job by its id names the same page.
            status, by_id = await b.get(f"/jobs/{job.id}")
            assert status == 200 and "67% succeeded" in by_id
    finally:
        await api.channel.close()


def _hours_ahead(hours: int) -> Timestamp:
    at = Timestamp()
    at.FromDatetime(datetime.now(UTC) + timedelta(hours=hours))
    return at


def _payload_field(page: str) -> str:
    found = re.search(r'<textarea id="payload"[^>]*>(.*?)</textarea>', page, re.S)
    assert found, page
    return html.unescape(found.group(1))


async def test_triggering_with_a_payload_the_api_refuses_keeps_the_text_shows_why_and_creates_no_run(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("mail", NOWHERE)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            token = await b.csrf("/jobs/mail")
            typed = '{"to": "ada@example.com",\n "subject": "hi" <oops>'
            status, page, _ = await b.post("/jobs/mail/trigger", {"csrf_token": token, "payload": typed})
            assert status == 400
            assert _payload_field(page) == typed  # what the user typed, escaped, nothing lost
            error = re.search(r'<p class="problem" role="alert" id="payload-error">(.*?)</p>', page, re.S)
            assert error and text_of(error.group(1)).startswith("Payload must be valid JSON (Expecting ',' "
                                                                "delimiter at line 2, column")
            assert 'aria-invalid="true"' in page and "payload-error" in page.split('id="payload"')[1][:300]

            status, page, _ = await b.post("/jobs/mail/trigger", {"csrf_token": token, "payload": "[1, 2]"})
            assert status == 400 and _payload_field(page) == "[1, 2]"
            assert "Payload must be a JSON object" in text_of(page)
            assert await job_runs(api, job) == []

            # Accepted: the new run's page. The same form sent twice (a double click) makes one run.
            form = {"csrf_token": token, "payload": '{"to": "ada@example.com"}', "nonce": "form-1"}
            status, _, location = await b.post("/jobs/mail/trigger", form)
            assert status == 303 and location.startswith("/runs/run_")
            status, _, again = await b.post("/jobs/mail/trigger", form)
            assert status == 303 and again == location
            [run] = await job_runs(api, job)
            assert location == f"/runs/{run.id}" and run.payload_json == '{"to": "ada@example.com"}'
    finally:
        await api.channel.close()


async def test_disabling_needs_the_csrf_token_and_the_current_etag(make_app: AppFactory,
                                                                   settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("report", NOWHERE)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            token = await b.csrf("/jobs/report")
            form = {"etag": job.etag, "enabled": "false"}
            status, _, _ = await b.post("/jobs/report/enabled", {**form, "csrf_token": "forged"})
            assert status == 403
            status, _, _ = await b.post("/jobs/report/enabled", form)
            assert status == 403
            assert (await get_job(api, job)).enabled

            status, _, location = await b.post("/jobs/report/enabled", {**form, "csrf_token": token})
            assert status == 303 and location == "/jobs/report"
            disabled = await get_job(api, job)
            assert not disabled.enabled
            status, page = await b.get("/jobs/report")
            assert 'id="job-state" class="badge muted">disabled' in page and ">Enable</button>" in page

            # A disabled job refuses the trigger, and says so beside the form, keeping the payload.
            status, page, _ = await b.post("/jobs/report/trigger", {"csrf_token": token, "payload": '{"a": 1}'})
            assert status == 409 and _payload_field(page) == '{"a": 1}'
            assert 'id="trigger-problem"' in page and "disabled" in text_of(page)
            assert await job_runs(api, job) == []

            # Someone else changes the job: the page's etag is stale, nothing changes, and the page says why.
            await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
                job=job_pb2.Job(id=job.id, description="nightly"),
                update_mask=FieldMask(paths=["description"])), metadata=api.metadata)
            status, page, _ = await b.post("/jobs/report/enabled",
                                           {"etag": disabled.etag, "enabled": "true", "csrf_token": token})
            assert status == 409
            assert "Someone changed this job after you opened the page, so nothing was changed." in text_of(page)
            assert "nightly" in page and not (await get_job(api, job)).enabled
    finally:
        await api.channel.close()


async def test_another_projects_job_is_a_404_page_and_cannot_be_triggered(make_app: AppFactory,
                                                                         settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    mine, theirs = await connect(app, settings.admin_key), await connect(app, settings.admin_key)
    try:
        await mine.create_job("mine", NOWHERE)
        their_job = await theirs.create_job("theirs", NOWHERE)
        async with browserless(app) as b:
            await b.sign_in(mine.key)
            for path in ("/jobs/theirs", f"/jobs/{their_job.id}"):
                status, page = await b.get(path)
                assert status == 404 and "Not Found" in page, path
            status, page = await b.get("/jobs")
            assert "theirs" not in page and "/jobs/mine" in page
            token = await b.csrf("/jobs/mine")
            status, _, _ = await b.post("/jobs/theirs/trigger", {"csrf_token": token, "payload": "{}"})
            assert status == 404
            status, _, _ = await b.post("/jobs/theirs/enabled", {"csrf_token": token, "etag": their_job.etag,
                                                                 "enabled": "false"})
            assert status == 404
            assert await job_runs(theirs, their_job) == []
            assert (await get_job(theirs, their_job)).enabled
    finally:
        await mine.channel.close()
        await theirs.channel.close()
