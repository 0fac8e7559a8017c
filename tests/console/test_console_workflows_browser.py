"""The workflow pages in a real browser: a run started from its workflow's page, its graph following the run
without a reload (a step held by its endpoint turns from busy to ok once released), and an approval decided
from the run's page, after which the run completes, live."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Locator, Page, expect

from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.console.browser import chromium, screenshot, sign_in
from tests.console.support import console_url
from tests.integration.test_workflow_runs import Flows, step
from tests.integration.test_workflow_waits import approval
from tests.sink import Reply, Sink

WAIT_MS = 15_000


def node(page: Page, ref: str) -> Locator:
    return page.locator(f'#wfr-graph a[href$="/steps/{ref}"] g.node')


async def test_a_run_page_follows_the_run_live_and_decides_its_approval(make_app: AppFactory, settings: Settings,
                                                                        sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = Flows(api, sink)
    release = asyncio.Event()
    await flows.job("fetch", then=Reply(block=release, body='{"order": 7, "total": 12.5}'))
    await flows.job("ship", then=Reply(body='{"shipped": true}'))
    await flows.create(step("fetch", "fetch"), approval("review", "fetch"), step("ship", "ship", "review"),
                       slug="orders")
    base = console_url(app)
    try:
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await sign_in(page, base, api.key)
            await page.goto(base + "/workflows/orders")
            await expect(page.locator("#version-1 svg")).to_be_visible()
            await expect(page.get_by_role("link", name="review, approval")).to_be_visible()
            await page.get_by_label("Input (a JSON object)").fill('{"order": 7}')
            await screenshot(page, "workflow")
            await page.get_by_role("button", name="Start a run").click()
            await page.wait_for_url(re.compile(r"/workflow-runs/wfr_\w+$"))

            await expect(node(page, "fetch")).to_have_class("node busy", timeout=WAIT_MS)
            await expect(node(page, "review")).to_have_class("node idle")
            await sink.wait_for(1, "/fetch")
            await page.evaluate("window.strait_same_page = true")  # gone if the page were loaded again
            release.set()
            await expect(node(page, "fetch")).to_have_class("node ok", timeout=WAIT_MS)
            await expect(page.get_by_role("link", name=re.compile(r"^fetch, job, completed"))).to_be_visible()
            approve = page.get_by_role("button", name="Approve review")
            await expect(approve).to_be_visible(timeout=WAIT_MS)  # the decision appears live too
            await expect(page.locator("#wfr-step-review")).to_contain_text("for approval")
            assert await page.evaluate("window.strait_same_page === true")
            await screenshot(page, "workflow-run")

            await page.get_by_label(re.compile("Comment on")).fill("looks right")
            await approve.click()
            await expect(page.locator("#wfr-status")).to_have_text("completed", timeout=WAIT_MS)
            await expect(node(page, "ship")).to_have_class("node ok")
            await expect(approve).to_have_count(0)
            await page.get_by_role("link", name=re.compile(r"^review, approval")).click()
            await expect(page.locator("#step-output")).to_contain_text('"comment": "looks right"')
            await screenshot(page, "workflow-step")
    finally:
        await api.channel.close()
