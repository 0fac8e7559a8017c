"""The console over HTTP: sign-in, the session cookie, CSRF, security headers, and project scoping."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import run_pb2, workflow_run_pb2
from strait_server.config import Settings
from tests.conftest import AppFactory, connect, eventually
from tests.console.support import browserless
from tests.integration.test_workflow_runs import Flows, step
from tests.integration.test_workflow_waits import approval
from tests.sink import Sink
from tests.support import scrape, value

S = run_pb2
R = workflow_run_pb2


async def test_pages_need_a_sign_in_and_a_bad_key_is_refused(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    async with browserless(app) as b:
        status, _ = await b.get("/runs?status=failed")
        assert status == 303
        token = await b.csrf("/signin")
        status, page, _ = await b.post("/signin", {"csrf_token": token, "api_key": "strait_nope"})
        assert status == 401 and "This key was not accepted." in page
        status, page, _ = await b.post("/signin", {"csrf_token": "forged", "api_key": "strait_nope"})
        assert status == 403


async def test_a_project_key_sees_its_runs_only_and_changes_need_the_csrf_token(make_app: AppFactory,
                                                                                 settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    mine, theirs = await connect(app, settings.admin_key), await connect(app, settings.admin_key)
    try:
        my_job = await mine.create_job("mine", "http://127.0.0.1:9/never", max_attempts=1)
        their_job = await theirs.create_job("theirs", "http://127.0.0.1:9/never", max_attempts=1)
        later = Timestamp()
        later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        my_run = await mine.trigger(my_job, payload_json='{"order": 41}', scheduled_time=later)  # cancelable
        their_run = await theirs.trigger(their_job)
        async with browserless(app) as b:
            assert await b.sign_in(mine.key) == "/"
            session_cookie = next(c for c in b.http.cookie_jar if c.key == "strait_console")
            assert session_cookie["httponly"] and session_cookie["samesite"] == "Strict"
            async with b.http.get(b.base + "/runs") as response:
                page = await response.text()
                assert response.status == 200
                assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert my_run.id in page and their_run.id not in page
            status, page = await b.get(f"/runs/{my_run.id}")
            assert status == 200 and "&#34;order&#34;: 41" in page
            status, page = await b.get(f"/runs/{their_run.id}")
            assert status == 404 and their_run.id in page

            # A change without the session's token, or from another origin, is refused and changes nothing.
            status, _, _ = await b.post(f"/runs/{my_run.id}/cancel", {"csrf_token": "forged"})
            assert status == 403
            token = await b.csrf("/runs")
            status, _, _ = await b.post(f"/runs/{my_run.id}/cancel", {"csrf_token": token},
                                        headers={"Origin": "http://evil.example"})
            assert status == 403
            assert (await mine.get_run(my_run.id)).status != S.RUN_STATUS_CANCELED
            status, _, location = await b.post(f"/runs/{my_run.id}/cancel", {"csrf_token": token})
            assert status == 303 and location == f"/runs/{my_run.id}"
            assert (await mine.get_run(my_run.id)).status == S.RUN_STATUS_CANCELED
            # Another project's run cannot be canceled through the console either.
            status, _, _ = await b.post(f"/runs/{their_run.id}/cancel", {"csrf_token": token})
            assert status == 404
            assert (await theirs.get_run(their_run.id)).status != S.RUN_STATUS_CANCELED

            status, _, _ = await b.post("/signout", {"csrf_token": token})
            assert status == 303
            status, _ = await b.get("/runs")
            assert status == 303
    finally:
        await mine.channel.close()
        await theirs.channel.close()


async def test_the_session_cookie_is_secure_when_the_console_sits_behind_tls(make_app: AppFactory,
                                                                            settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0", console_secure_cookie=True)
    api = await connect(app, settings.admin_key)
    try:
        async with browserless(app) as b:
            token = await b.csrf("/signin")
            async with b.http.post(b.base + "/signin", data={"csrf_token": token, "api_key": api.key},
                                   headers={"Origin": b.base}, allow_redirects=False) as response:
                assert response.status == 303
                cookie = response.cookies["strait_console"]
                assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    finally:
        await api.channel.close()


async def test_the_runs_list_filters_by_job_status_and_creation_time(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    try:
        nightly = await api.create_job("nightly", "http://127.0.0.1:9/never")
        hourly = await api.create_job("hourly", "http://127.0.0.1:9/never")
        old = await api.trigger(nightly, scheduled_time=later)
        recent = await api.trigger(nightly, scheduled_time=later)
        other = await api.trigger(hourly, scheduled_time=later)
        conn = await asyncpg.connect(settings.database_url)
        try:  # as if triggered two days ago
            await conn.execute("UPDATE runs SET create_time = now() - interval '2 days' WHERE id = $1", old.id)
        finally:
            await conn.close()
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get("/runs")
            assert all(r.id in page for r in (old, recent, other))
            _, page = await b.get("/runs?created=24h")
            assert recent.id in page and other.id in page and old.id not in page
            _, page = await b.get("/runs?job=nightly&created=7d&status=delayed")
            assert old.id in page and recent.id in page and other.id not in page
            _, page = await b.get("/runs?job=hourly&status=completed")
            assert "No runs match." in page and other.id not in page
            tagged = await api.trigger(hourly, scheduled_time=later, tags={"region": "eu", "tier": "gold"})
            _, page = await b.get("/runs?tags=region%3Deu%2C+tier%3Dgold")
            assert tagged.id in page and other.id not in page and 'value="region=eu, tier=gold"' in page
            _, page = await b.get("/runs?tags=region%3Dus")
            assert "No runs match." in page
            status, page = await b.get("/runs?tags=region")
            assert status == 400 and "KEY=VALUE" in page
    finally:
        await api.channel.close()


async def test_the_live_list_adds_new_runs_once_and_never_the_rows_already_shown(make_app: AppFactory,
                                                                               settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    try:
        job = await api.create_job("nightly", "http://127.0.0.1:9/never")
        shown = await api.trigger(job, scheduled_time=later)  # created just before the page: on it already
        async with browserless(app) as b:
            await b.sign_in(api.key)
            _, page = await b.get("/runs")
            assert page.count(f'id="run-{shown.id}"') == 1
            live = re.search(r'sse-connect="([^"]+)"', page)
            assert live is not None
            async with b.http.get(b.base + html.unescape(live.group(1)),
                                  headers={"Accept": "text/event-stream"}) as stream:
                new = await api.trigger(job, scheduled_time=later)
                received = ""
                while f'<tr id="run-{new.id}">' not in received:
                    received += (await asyncio.wait_for(stream.content.readline(), 10)).decode()
            assert f'<tr id="run-{shown.id}">' not in received  # not added a second time
            assert received.count(f'<tr id="run-{new.id}">') == 1
            # A tags filter applies to the live rows too.
            _, page = await b.get("/runs?tags=region%3Deu")
            live = re.search(r'sse-connect="([^"]+)"', page)
            assert live is not None
            async with b.http.get(b.base + html.unescape(live.group(1)),
                                  headers={"Accept": "text/event-stream"}) as stream:
                elsewhere = await api.trigger(job, scheduled_time=later, tags={"region": "us"})
                wanted = await api.trigger(job, scheduled_time=later, tags={"region": "eu"})
                received = ""
                while f'<tr id="run-{wanted.id}">' not in received:
                    received += (await asyncio.wait_for(stream.content.readline(), 10)).decode()
            assert elsewhere.id not in received
    finally:
        await api.channel.close()


async def test_live_views_keep_up_after_the_api_ends_their_watch_streams(make_app: AppFactory,
                                                                          settings: Settings, sink: Sink) -> None:
    # The API ends every watch stream after 1 s here (STRAIT_WATCH_MAX_DURATION): the console's live views go on
    # from where each stream stopped, on the same event stream to the browser.
    app = await make_app(console_address="127.0.0.1:0", watch_max_duration=timedelta(seconds=1),
                         metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))

    async def ended(method: str, at_least: float) -> bool:
        return value(await scrape(app), "strait_grpc_requests_total", method=method, code="OK") >= at_least

    try:
        job = await api.create_job("nightly", "http://127.0.0.1:9/never")
        await flows.job("quick")
        await flows.create(step("quick", "quick"))
        await flows.create(approval("review"), slug="reviewed")
        waiting = await api.trigger(job, scheduled_time=later)
        reviewed = await flows.trigger("reviewed")
        await flows.wait_step(reviewed.id, "review", R.STEP_RUN_STATUS_WAITING)
        async with browserless(app) as b:
            await b.sign_in(api.key)
            streams = {}
            for path in ("/runs", "/workflow-runs", f"/runs/{waiting.id}", f"/workflow-runs/{reviewed.id}"):
                _, page = await b.get(path)
                live = re.search(r'sse-connect="([^"]+)"', page)
                assert live is not None, path
                streams[path] = await b.http.get(b.base + html.unescape(live.group(1)),
                                                 headers={"Accept": "text/event-stream"}).__aenter__()
            try:
                # The API streams behind each view ended twice: the views are on their third call by now.
                await eventually(lambda: ended("/strait.v1.RunService/WatchRuns", 2), 15)
                await eventually(lambda: ended("/strait.v1.WorkflowRunService/WatchWorkflowRuns", 2), 15)
                await eventually(lambda: ended("/strait.v1.RunService/WatchRun", 2), 15)
                await eventually(lambda: ended("/strait.v1.WorkflowRunService/WatchWorkflowRun", 2), 15)
                new = await api.trigger(job, scheduled_time=later)
                workflow_run = await flows.trigger()
                await api.runs.CancelRun(S.CancelRunRequest(id=waiting.id), metadata=api.metadata)
                await flows.runs.ApproveStep(R.ApproveStepRequest(id=reviewed.id, step_ref="review"),
                                             metadata=api.metadata)
                for path, wanted in (("/runs", f'<tr id="run-{new.id}">'),
                                     ("/workflow-runs", f'<tr id="workflow-run-{workflow_run.id}">'),
                                     (f"/runs/{waiting.id}", ">canceled<"),
                                     (f"/workflow-runs/{reviewed.id}", ">completed<")):
                    received = ""
                    while wanted not in received:
                        line = await asyncio.wait_for(streams[path].content.readline(), 10)
                        assert line, f"{path}: the event stream ended"
                        received += line.decode()
            finally:
                for response in streams.values():
                    response.close()
    finally:
        await api.channel.close()
