"""A real headless browser for the console tests: the machine's Chromium (Debian's `chromium` package, or the
binary STRAIT_TEST_CHROMIUM names) driven by Playwright, which downloads no browser of its own. Screenshots go
to test-artifacts/console/ (not committed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


def chromium_path() -> str:
    path = os.environ.get("STRAIT_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("the console tests need Chromium: apt install chromium (or set STRAIT_TEST_CHROMIUM)")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(base + "/signin")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda url: "/signin" not in url)
