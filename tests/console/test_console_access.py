"""The console without a mouse and in a narrow window: signing in, moving between pages and acting on a run
with the keyboard alone, and pages that fit a phone-sized window without scrolling sideways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import expect

from strait_client.v1 import run_pb2
from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.console.browser import chromium, screenshot
from tests.console.support import console_url

S = run_pb2
PAGES = ["/overview", "/runs", "/dead-letter", "/jobs", "/schedules", "/circuits", "/workflows", "/workflow-runs",
         "/workers"]


async def test_a_keyboard_alone_signs_in_finds_a_run_and_cancels_it(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    job = await api.create_job("nightly", "http://127.0.0.1:9/never")
    run = await api.trigger(job, scheduled_time=later)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            base = console_url(app)
            await page.goto(base + "/signin")
            await expect(page.get_by_label("API key")).to_be_focused()  # autofocus: type at once
            await page.keyboard.type(api.key)
            await page.keyboard.press("Enter")
            await page.wait_for_url(f"{base}/runs")
            # Tab order: the skip link first, and it leads past the navigation to the page's content.
            await page.keyboard.press("Tab")
            await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
            run_link = page.get_by_role("link", name=run.id)
            await run_link.focus()  # reachable by Tab: a real link
            await page.keyboard.press("Enter")
            await page.wait_for_url(f"{base}/runs/{run.id}")
            cancel = page.get_by_role("button", name="Cancel")
            await cancel.focus()
            await expect(cancel).to_be_focused()
            await page.keyboard.press("Enter")
            await expect(page.locator("#run-status")).to_have_text("canceled", timeout=10_000)
        assert (await api.get_run(run.id)).status == S.RUN_STATUS_CANCELED
    finally:
        await api.channel.close()


async def test_every_page_fits_a_narrow_window(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await api.create_job("a-job-with-a-rather-long-slug", "http://127.0.0.1:9/a/long/endpoint/path")
    await api.trigger(job)
    try:
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 380, "height": 800})
            base = console_url(app)
            await page.goto(base + "/signin")
            await page.get_by_label("API key").fill(api.key)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(f"{base}/runs")
            for path in PAGES:
                await page.goto(base + path)
                overflow = await page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 1, (path, overflow)
            await screenshot(page, "narrow-workflow-runs")
    finally:
        await api.channel.close()
