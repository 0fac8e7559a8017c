"""The operations pages in a real browser: the admin key creates a project and a key, signs out, and the new
key signs in and sees its project's overview, workers, circuits and schedules (screenshots of each)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import expect

from strait_server.config import Settings
from tests.conftest import Api, AppFactory
from tests.console.browser import chromium, screenshot, sign_in
from tests.console.ops_data import circuit_listed, connected, seed
from tests.console.support import console_url
from tests.sink import Sink


async def test_an_admin_makes_a_project_key_that_then_operates_its_project(make_app: AppFactory, settings: Settings,
                                                                           sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    base = console_url(app)
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await sign_in(page, base, settings.admin_key)
        await expect(page).to_have_url(base + "/projects")
        await page.get_by_label("Slug").fill("storefront")
        await page.get_by_label("Name").fill("Storefront")
        await page.get_by_role("button", name="Create project").click()
        await expect(page.get_by_role("heading", name="Project storefront")).to_be_visible()
        await page.get_by_label("Name").fill("operations")
        await page.get_by_label("May connect workers").check()
        await page.get_by_role("button", name="Create key").click()
        secret = await page.get_by_label("copy it now").input_value()
        assert secret.startswith("strait_")
        await page.reload()
        await expect(page.get_by_label("copy it now")).to_have_count(0)  # shown once
        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(base + "/signin")

        await sign_in(page, base, secret)
        await expect(page.locator(".who")).to_have_text("storefront")
        member = Api(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"), secret, settings.admin_key)
        try:
            seeded = await seed(app, member, sink, "shop")
            await circuit_listed(member, seeded.failing_url)
            digest = await member.create_job("digest", sink.url("/ok"))
            tomorrow = Timestamp()
            tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
            for _ in range(5):
                await member.trigger(digest, scheduled_time=tomorrow)
            async with connected(seeded):
                await page.goto(base + "/overview")
                await expect(page.locator("#hour-facts")).to_contain_text("Runs created")
                await expect(page.locator(".chart svg")).to_have_count(3)
                await screenshot(page, "overview")
                await page.get_by_role("link", name="Workers").click()
                assert seeded.worker is not None
                row = page.get_by_role("row").filter(has_text=seeded.worker.name)
                await expect(row.get_by_text("serving")).to_be_visible()
                await screenshot(page, "workers")
                await row.get_by_role("button", name="Drain").click()
                await expect(row.get_by_text("draining")).to_be_visible()
                await page.get_by_role("link", name="Circuits").click()
                await expect(page.get_by_role("row").filter(has_text=seeded.failing_url)).to_be_visible()
                await screenshot(page, "circuits")
                await page.get_by_role("link", name="Schedules").click()
                await expect(page.locator("#jobs-schedules tbody tr")).to_have_count(1)
                await page.locator("#jobs-schedules").get_by_role("button", name="Pause").click()
                await expect(page.locator("#jobs-schedules").get_by_text("paused")).to_be_visible()
                await screenshot(page, "schedules")
        finally:
            await member.channel.close()

