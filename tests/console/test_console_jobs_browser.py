"""The jobs pages in a real browser: a job triggered from the console with a JSON payload, whose run page turns
completed without a reload."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Frame, expect

from strait_client.v1 import job_pb2
from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.console.browser import chromium, screenshot, sign_in
from tests.console.support import console_url
from tests.sink import Reply, Sink


async def test_a_job_triggered_from_the_console_completes_live_on_its_run_page(make_app: AppFactory,
                                                                              settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    answer = asyncio.Event()
    url = sink.script("/ship", then=Reply(block=answer, body='{"shipped": true}'))
    await api.create_job("ship", url, tags={"team": "parcels"})
    await api.create_job("nightly-report", "", execution_mode=job_pb2.EXECUTION_MODE_WORKER, queue="reports",
                         cron="0 2 * * *", timezone="Europe/Paris", enabled=False)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            base = console_url(app)
            await sign_in(page, base, api.key)
            await page.goto(base + "/jobs")
            await screenshot(page, "jobs")
            await page.get_by_role("link", name="ship").click()
            await expect(page.get_by_role("heading", name="Job ship")).to_be_visible()

            payload = page.get_by_label("Payload (JSON object)")
            await payload.fill('{"parcel": 7,}')
            await page.get_by_role("button", name="Trigger run").click()
            await expect(page.locator("#payload-error")).to_contain_text("must be valid JSON")
            await expect(payload).to_have_value('{"parcel": 7,}')
            await screenshot(page, "job")

            await payload.fill('{"parcel": 7}')
            await page.get_by_role("button", name="Trigger run").click()
            await page.wait_for_url(re.compile(r"/runs/run_\w+$"))
            navigations: list[str] = []

            def navigated(frame: Frame) -> None:
                if frame == page.main_frame:
                    navigations.append(frame.url)
            page.on("framenavigated", navigated)
            await expect(page.locator("#run-status")).to_have_text("executing", timeout=10_000)
            [received] = await sink.wait_for(1, "/ship")
            assert received.json() == {"parcel": 7}
            answer.set()
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
            await expect(page.locator("#run-output")).to_contain_text('"shipped": true')
            assert navigations == []  # the status turned without a reload
    finally:
        await api.channel.close()
