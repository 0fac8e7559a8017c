"""The jobs and dead-letter pages in a real browser: a job triggered from the console with a JSON payload, whose
run page turns completed without a reload; a run that failed into the dead letter, replayed from there, and its
replay completing once the endpoint answers 200."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Frame, expect

from strait_client.v1 import job_pb2, run_pb2
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


async def test_a_dead_letter_run_is_replayed_from_the_dead_letter_page_and_completes(make_app: AppFactory,
                                                                                    settings: Settings,
                                                                                    sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    url = sink.script("/charge", Reply(status=500, body='{"error": "card service down"}'), then=Reply())
    job = await api.create_job("charge", url, max_attempts=1)
    run = await api.trigger(job, payload_json='{"order": 41}')
    await api.wait_status(run.id, run_pb2.RUN_STATUS_DEAD_LETTER)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            base = console_url(app)
            await sign_in(page, base, api.key)
            await page.get_by_role("navigation", name="Main").get_by_role("link", name="Dead letter").click()
            group = page.locator("section.dead-group")
            await expect(group.get_by_role("heading")).to_have_text("charge: endpoint returned 500")
            await group.get_by_role("button", name=f"Replay {run.id}").click()

            outcome = page.locator("#replay-outcome")
            await expect(outcome.get_by_role("heading")).to_have_text("Replayed 1 run")
            await screenshot(page, "dead-letter")
            await outcome.get_by_role("link").first.click()
            await page.wait_for_url(lambda u: "/runs/run_" in u and run.id not in u)
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
            await expect(page.get_by_text("replay of")).to_be_visible()
            replays = sink.for_path("/charge")[1:]
            assert [r.json() for r in replays] == [{"order": 41}]
            assert (await api.get_run(run.id)).status == run_pb2.RUN_STATUS_DEAD_LETTER  # kept for inspection
    finally:
        await api.channel.close()
