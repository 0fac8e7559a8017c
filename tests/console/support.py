"""A console served by a real server process's components, and a signed-in HTTP session against it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from strait_server.app import App

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Browserless:
    """An HTTP client keeping the console's cookies, as a browser would."""

    base: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: object) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False, **kwargs) as response:  # type: ignore[arg-type]
            return response.status, await response.text()

    async def post(self, path: str, form: dict[str, str], **kwargs: object) -> tuple[int, str, str]:
        headers = {"Origin": self.base, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        async with self.http.post(self.base + path, data=form, allow_redirects=False, headers=headers,
                                  **kwargs) as response:  # type: ignore[arg-type]
            return response.status, await response.text(), response.headers.get("Location", "")

    async def csrf(self, path: str) -> str:
        _, page = await self.get(path)
        found = CSRF_FIELD.search(page)
        assert found, page[:500]
        return found.group(1)

    async def sign_in(self, key: str) -> str:
        token = await self.csrf("/signin")
        status, page, location = await self.post("/signin", {"csrf_token": token, "api_key": key})
        assert status == 303, page[:500]
        return location


def console_url(app: App) -> str:
    assert app.console is not None
    return f"http://127.0.0.1:{app.console.port}"


@asynccontextmanager
async def browserless(app: App) -> AsyncIterator[Browserless]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Browserless(console_url(app), http)
