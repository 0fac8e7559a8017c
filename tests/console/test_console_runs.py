"""The runs pages in a real browser: a run triggered meanwhile appears in the list and turns completed without a
reload; its page shows the timeline growing live, and replay makes a new run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import expect

from strait_client.v1 import job_pb2
from strait_server.config import Settings
from strait_server.console.pages.runs import LIVE_ROWS
from tests.conftest import AppFactory, connect
from tests.console.browser import chromium, screenshot, sign_in
from tests.console.support import console_url
from tests.sink import Reply, Sink


async def test_runs_appear_and_finish_live_and_replay_from_the_run_page(make_app: AppFactory, settings: Settings,
                                                                       sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    url = sink.script("/slow", then=Reply(delay=1.0, body='{"shipped": true}'))
    job = await api.create_job("ship", url)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await sign_in(page, console_url(app), api.key)
            await page.goto(console_url(app) + "/runs")
            await expect(page.get_by_text("No runs")).to_be_visible()
            run = await api.trigger(job, payload_json='{"parcel": 7}')
            row = page.locator(f"#run-{run.id}")
            await expect(row).to_be_visible(timeout=10_000)
            await expect(row.get_by_text("completed")).to_be_visible(timeout=15_000)
            await screenshot(page, "runs")

            await row.get_by_role("link").click()
            await expect(page.locator("#run-status")).to_have_text("completed")
            await expect(page.locator("#run-output")).to_contain_text('"shipped": true')
            await page.get_by_role("button", name="Replay").click()
            await page.wait_for_url(lambda u: "/runs/run_" in u and run.id not in u)
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
            await expect(page.locator("#timeline li")).to_have_count(3)  # queued, executing, completed: live
            await screenshot(page, "run")
    finally:
        await api.channel.close()


async def test_the_live_list_keeps_its_newest_rows_only(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    job = await api.create_job("nightly", "http://127.0.0.1:9/never")
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await sign_in(page, console_url(app), api.key)
            await page.goto(console_url(app) + "/runs")
            await expect(page.get_by_text("No runs")).to_be_visible()
            await page.wait_for_function("document.querySelector('#run-rows') && window.htmx")
            first = await api.trigger(job, scheduled_time=later)
            await expect(page.locator(f"#run-{first.id}")).to_be_visible(timeout=10_000)  # the feed is open
            batch = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
                id=job.id, runs=[job_pb2.RunOptions(scheduled_time=later) for _ in range(LIVE_ROWS + 30)]),
                metadata=api.metadata)
            newest = batch.runs[-1].id
            await expect(page.locator(f"#run-{newest}")).to_be_visible(timeout=15_000)
            await expect(page.locator("#run-rows tr")).to_have_count(LIVE_ROWS)
            await expect(page.locator(f"#run-{first.id}")).to_have_count(0)  # the oldest rows went
    finally:
        await api.channel.close()
