"""What every console page shares: rendering with the session and CSRF token, the SSE response, and the mapping
of API errors to pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.sessions import ConsoleSession

API: web.AppKey[ConsoleApi] = web.AppKey("api", ConsoleApi)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
SESSION: web.RequestKey[ConsoleSession] = web.RequestKey("session", ConsoleSession)
KEEPALIVE_S = 15.0

STATUS_TONES = {"completed": "ok", "executing": "busy", "queued": "idle", "delayed": "idle", "waiting": "idle",
                "failed": "bad", "dead_letter": "bad", "timed_out": "bad", "crashed": "bad", "canceled": "muted",
                "expired": "muted", "system_failed": "bad", "running": "busy", "pending": "idle", "ready": "idle",
                "skipped": "muted", "paused": "idle", "scheduled": "idle"}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("strait_server.console", "templates"),
                             autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined,
                             enable_async=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["pretty_json"] = pretty_json
    env.filters["tone"] = lambda status: STATUS_TONES.get(str(status or ""), "idle")
    env.filters["status"] = lambda status: str(status or "").replace("_", " ")
    return env


def session_of(request: web.Request) -> ConsoleSession:
    return request[SESSION]


def caller(request: web.Request) -> Caller:
    """The signed-in key, for this request's browser."""
    return Caller.of(request[SESSION].api_key, request.remote)


def render(request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
    session = request.get(SESSION)
    body = request.app[TEMPLATES].get_template(template).render(session=session, path=request.path, **context)
    return web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")


def fragment(request: web.Request, template: str, **context: Any) -> str:
    session = request.get(SESSION)
    return request.app[TEMPLATES].get_template(template).render(session=session, **context)


class EventStream:
    """A text/event-stream response: named events whose data is HTML for htmx's SSE extension to swap in."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    @property
    def response(self) -> web.StreamResponse:
        """What the page's handler returns once the stream ends."""
        return self._response

    @classmethod
    async def open(cls, request: web.Request) -> EventStream:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        return cls(response)

    async def send(self, event: str, html: str) -> None:
        lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
        await self._response.write(f"event: {event}\n{lines}\n".encode())

    async def keepalive(self) -> None:
        await self._response.write(b": keepalive\n\n")


async def with_keepalive(stream: EventStream, source: Any) -> Any:
    """Items of the async iterator `source`; a comment goes out whenever it is quiet for KEEPALIVE_S, so that a
    viewer that went away is noticed (the write fails) and proxies keep the stream open."""
    iterator = source.__aiter__()
    pending = asyncio.ensure_future(iterator.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                await stream.keepalive()
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(iterator.__anext__())
    finally:
        # The pending __anext__ runs the source in a task of its own: it must have finished before the source
        # can be closed (closing a generator that is still running raises RuntimeError).
        pending.cancel()
        await asyncio.wait({pending})
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def ago(value: datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"


def pretty_json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def duration(value: timedelta | None) -> str:
    return f"{value.total_seconds():g}s" if value is not None else "—"


def query(request: web.Request, **changes: str) -> str:
    """The current query string with `changes` applied (empty values dropped)."""
    values: Mapping[str, str] = {**request.query, **changes}
    return urlencode({k: v for k, v in values.items() if v})
