"""The jobs and dead-letter pages over HTTP: listing and paging jobs, a job's settings, recent runs and success
rate, triggering with a payload the API refuses, enabling and disabling (CSRF, stale etags), project scoping, and
the dead letter grouped and replayed."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server.config import Settings
from strait_server.console.pages import dead_letter
from tests.conftest import Api, AppFactory, connect
from tests.console.support import Browserless, browserless
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


async def _dead_runs(api: Api, job: job_pb2.Job, count: int) -> list[run_pb2.Run]:
    runs = []
    for _ in range(count):
        run = await api.trigger(job)
        runs.append(await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER))
    return runs


async def post_fields(b: Browserless, path: str, fields: list[tuple[str, str]]) -> tuple[int, str]:
    """A form post with repeated fields (ticked checkboxes)."""
    async with b.http.post(b.base + path, data=fields, headers={"Origin": b.base},
                           allow_redirects=False) as response:
        return response.status, await response.text()


def outcome_of(page: str) -> str:
    """What the page says a replay did."""
    found = re.search(r'<section class="outcome" id="replay-outcome"[^>]*>(.*?)</section>', page, re.S)
    assert found, page
    return text_of(found.group(1))


def _groups(page: str) -> list[str]:
    titles = re.findall(r'<h2 id="group-title-[^"]+">(.*?)</h2>', page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", t)) for t in titles]


async def test_the_dead_letter_groups_runs_by_job_and_error_and_replays_one_ticked_or_a_group(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        pay = await api.create_job("pay", sink.script("/pay", *[Reply(status=500)] * 3, Reply(status=404)),
                                   max_attempts=1)
        mail = await api.create_job("mail", sink.script("/mail", Reply(status=503)), max_attempts=1)
        paid = await _dead_runs(api, pay, 4)
        mailed = await _dead_runs(api, mail, 1)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/dead-letter")
            assert status == 200
            assert "5 runs in the dead letter, in 3 groups by job and error." in text_of(page)
            assert _groups(page) == ["mail: endpoint returned 503", "pay: endpoint returned 404",
                                     "pay: endpoint returned 500"]
            assert "Replay all in this group (3)" in page
            assert "more" not in text_of(page.split('id="dead-letter-summary"')[1][:400])

            token = await b.csrf("/dead-letter")
            status, page, _ = await b.post("/dead-letter/replay", {"csrf_token": token, "action": "selected"})
            assert status == 400 and "Tick the runs to replay first." in page

            # One run (the button of its row; the ticks of the form do not count then).
            status, page, _ = await b.post("/dead-letter/replay", {"csrf_token": token, "one": mailed[0].id,
                                                                   "run": paid[0].id, "group": "x"})
            assert status == 200 and outcome_of(page).startswith("Replayed 1 run ")
            [replay] = [r for r in await job_runs(api, mail) if r.replay_of_run_id == mailed[0].id]
            assert f"{replay.id} queued replays {mailed[0].id}" in outcome_of(page)
            assert f'href="/runs/{replay.id}"' in page
            # Again from the page: the first replay comes back, no second one.
            status, page, _ = await b.post("/dead-letter/replay", {"csrf_token": token, "one": mailed[0].id})
            assert outcome_of(page).startswith("Replayed 0 runs 1 had been replayed from here already")
            assert len(await job_runs(api, mail)) == 2

            # Ticked runs (one of them unknown: refused, the others go ahead), then a whole group: the runs of
            # that job and error in the dead letter now.
            status, page = await post_fields(b, "/dead-letter/replay", [
                ("csrf_token", token), ("run", paid[0].id), ("run", paid[3].id), ("run", "run_nope"),
                ("action", "selected")])
            outcome = outcome_of(page)
            assert status == 200 and outcome.startswith("Replayed 2 runs")
            assert "1 could not be replayed: run_nope:" in outcome
            pay_500 = dead_letter.group_key(pay.id, "endpoint returned 500")
            status, page, _ = await b.post("/dead-letter/replay", {"csrf_token": token, "action": "group",
                                                                   "group": pay_500})
            outcome = outcome_of(page)
            assert "Replayed 2 runs" in outcome and "1 had been replayed from here already" in outcome
            replayed = {r.replay_of_run_id for r in await job_runs(api, pay) if r.replay_of_run_id}
            assert replayed == {r.id for r in paid}
    finally:
        await api.channel.close()


async def test_the_dead_letter_reads_a_bounded_number_of_runs_and_says_when_there_are_more(
        make_app: AppFactory, settings: Settings, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("pay", sink.script("/pay", then=Reply(status=500)), max_attempts=1)
        await _dead_runs(api, job, 4)
        monkeypatch.setattr(dead_letter, "MAX_RUNS", 3)
        monkeypatch.setattr(dead_letter, "PAGE_SIZE", 2)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get("/dead-letter")
            assert "3 runs in the dead letter, in 1 group" in text_of(page)
            assert "There are more: this page reads the newest 3 only." in text_of(page)
            monkeypatch.setattr(dead_letter, "MAX_RUNS", 4)
            _, page = await b.get("/dead-letter")
            assert "4 runs in the dead letter" in text_of(page) and "There are more" not in page
    finally:
        await api.channel.close()
