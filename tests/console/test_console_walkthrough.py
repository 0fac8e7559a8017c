"""The README's walkthrough done entirely in the console, in a real browser against a real server and a real
endpoint (`/` echoes the payload, `/fail` answers 503): create `hello` and trigger it, watch it complete; create
`flaky` on `/fail` with 3 attempts, trigger it, watch it reach the dead letter; point it at `/`, replay the run
and watch the replay complete. Every status turns on the page without a reload."""

from __future__ import annotations

import asyncio
import json
import re

from playwright.async_api import Frame, Page, expect

from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.console.browser import chromium, screenshot, sign_in
from tests.console.support import console_url
from tests.sink import Received, Reply, Sink

RUN_PAGE = re.compile(r"/runs/(run_\w+)$")


def echo(received: Received) -> str:
    """What the README's echo endpoint answers."""
    return json.dumps({"echo": received.json(), "attempt": int(received.headers.get("X-Attempt", "0"))})


class Reloads:
    """Counts the page's own navigations from now on: a live page changes without any."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self._page = page
        page.on("framenavigated", self._navigated)

    def _navigated(self, frame: Frame) -> None:
        if frame == self._page.main_frame:
            self.urls.append(frame.url)

    def stop(self) -> list[str]:
        self._page.remove_listener("framenavigated", self._navigated)
        return self.urls


async def open_create_form(page: Page) -> None:
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    form = page.locator("details#create")
    if await form.get_attribute("open") is None:
        await form.locator("summary").click()


async def create_job(page: Page, slug: str, endpoint: str, max_attempts: str = "") -> None:
    await open_create_form(page)
    await page.get_by_label("Slug").fill(slug)
    await page.get_by_label("Endpoint URL").fill(endpoint)
    if max_attempts:
        await page.get_by_label("Max attempts").fill(max_attempts)
    await screenshot(page, f"walkthrough-create-{slug}")
    await page.get_by_role("button", name="Create job").click()
    await page.wait_for_url(re.compile(rf"/jobs/{slug}$"))
    await expect(page.get_by_role("heading", name=f"Job {slug}")).to_be_visible()


async def trigger(page: Page, payload: str) -> str:
    """Triggers the job of the page shown; the new run's id, its page shown."""
    await page.get_by_label("Payload (JSON object)").fill(payload)
    await page.get_by_role("button", name="Trigger run").click()
    await page.wait_for_url(RUN_PAGE)
    found = RUN_PAGE.search(page.url)
    assert found
    return found.group(1)


async def test_the_readme_walkthrough_in_the_console(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    # `/` holds its first two answers (hello's run, then the replay) until the test has seen them in flight.
    hello_answer, replay_answer = asyncio.Event(), asyncio.Event()
    good = sink.script("/", Reply(answer=echo, block=hello_answer), Reply(answer=echo, block=replay_answer),
                       then=Reply(answer=echo))
    failing = sink.script("/fail", then=Reply(status=503, body=""))
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            base = console_url(app)
            await sign_in(page, base, api.key)

            # hello: a first try without the URL's scheme is refused beside the field, then created, triggered
            # and completed live.
            await open_create_form(page)
            await page.get_by_label("Slug").fill("hello")
            await page.get_by_label("Endpoint URL").fill(good.removeprefix("http://"))
            await page.get_by_role("button", name="Create job").click()
            await expect(page.locator("#new-endpoint_url-error")).to_have_text(
                "Endpoint URL must be an http or https URL")
            await expect(page.get_by_label("Slug")).to_have_value("hello")
            await screenshot(page, "walkthrough-create-refused")
            await create_job(page, "hello", good)
            await trigger(page, '{"name": "world"}')
            reloads = Reloads(page)
            await expect(page.locator("#run-status")).to_have_text("executing", timeout=10_000)
            await sink.wait_for(1, "/")
            hello_answer.set()
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
            await expect(page.locator("#run-output")).to_contain_text('"name": "world"')
            assert reloads.stop() == []
            await screenshot(page, "walkthrough-hello-completed")

            # flaky: three attempts at /fail, then the dead letter, live.
            await create_job(page, "flaky", failing, max_attempts="3")
            await expect(page.locator(".job-settings")).to_contain_text("up to 3")
            dead = await trigger(page, '{"order": 42}')
            reloads = Reloads(page)
            await expect(page.locator("#run-status")).to_have_text("dead letter", timeout=20_000)
            await expect(page.locator("#run-summary table.attempts tbody tr")).to_have_count(3)
            assert reloads.stop() == []
            assert [r.json() for r in sink.for_path("/fail")] == [{"order": 42}] * 3
            await screenshot(page, "walkthrough-dead-letter")

            # The fix: flaky's endpoint is now the good one.
            await page.get_by_role("link", name="flaky", exact=True).click()
            await page.locator("details#edit summary").click()
            await page.get_by_label("Endpoint URL").fill(good)
            await screenshot(page, "walkthrough-edit")
            await page.get_by_role("button", name="Save changes").click()
            await page.wait_for_url(re.compile(r"/jobs/flaky\?saved=1$"))
            await expect(page.locator("#job-note")).to_contain_text("Saved")
            await expect(page.locator(".job-settings dl.facts").first).to_contain_text(good)

            # The replay, from the dead run's page: a new run with the same payload, completed live.
            await page.get_by_role("link", name=dead).click()
            await page.wait_for_url(re.compile(rf"/runs/{dead}$"))
            await expect(page.locator("#run-status")).to_have_text("dead letter")
            await page.get_by_role("button", name="Replay").click()
            await page.wait_for_url(lambda url: RUN_PAGE.search(url) is not None and dead not in url)
            reloads = Reloads(page)
            await expect(page.get_by_text("replay of")).to_be_visible()
            await expect(page.locator("#run-status")).to_have_text("executing", timeout=10_000)
            [_, replayed] = await sink.wait_for(2, "/")
            assert replayed.json() == {"order": 42}
            replay_answer.set()
            await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
            await expect(page.locator("#run-output")).to_contain_text('"order": 42')
            assert reloads.stop() == []
            await screenshot(page, "walkthrough-replay-completed")
    finally:
        await api.channel.close()
