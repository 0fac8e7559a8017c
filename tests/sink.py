"""A real local HTTP endpoint that receives dispatches and answers as each test scripts it."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    done_at: float | None = None  # when the answer was sent (monotonic), None while in flight
    wall: float = field(default_factory=time.time)  # arrival on the wall clock, to compare with event times

    @property
    def run_id(self) -> str:
        return self.headers.get("X-Run-ID", "")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: str = '{"ok": true}'
    delay: float = 0.0  # seconds before answering (to exercise timeouts and in-flight states)
    block: asyncio.Event | None = None  # answer only once this is set
    # Job code: runs with the request before the answer is sent (e.g. reports through RunContextService).
    action: Callable[[Received], Awaitable[None]] | None = None
    # The body computed from the request (instead of `body`): an endpoint whose answer depends on its input.
    answer: Callable[[Received], str] | None = None


@dataclass
class Sink:
    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    _scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    _default: dict[str, Reply] = field(default_factory=dict)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> str:
        """Answers the next requests to `path` with `replies` in order, then `then` (default 200)."""
        self._scripts[path].extend(replies)
        if then is not None:
            self._default[path] = then
        return self.url(path)

    def peak_concurrency(self, path: str, group: Callable[[Received], str] = lambda r: "") -> dict[str, int]:
        """Per group, the most requests to `path` that were in flight at once (answered ones only)."""
        edges: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for r in self.for_path(path):
            assert r.done_at is not None, "a request is still in flight"
            # Ends sort before starts at the same instant: back-to-back requests do not overlap.
            edges[group(r)] += [(r.at, 1), (r.done_at, -1)]
        peaks = {}
        for key, points in edges.items():
            level = peak = 0
            for _, step in sorted(points):
                level += step
                peak = max(peak, level)
            peaks[key] = peak
        return peaks

    def for_path(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 15.0) -> list[Received]:
        def ready() -> bool:
            return len(self.received if path is None else self.for_path(path)) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(ready), timeout)
        return self.received if path is None else self.for_path(path)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, time.monotonic())
        self.received.append(received)
        async with self._arrived:
            self._arrived.notify_all()
        queue = self._scripts[request.path]
        reply = queue.popleft() if queue else self._default.get(request.path, Reply())
        if reply.action is not None:
            await reply.action(received)
        if reply.block is not None:
            await reply.block.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        text = reply.body if reply.answer is None else reply.answer(received)
        received.done_at = time.monotonic()
        return web.Response(status=reply.status, text=text, content_type="application/json")


async def start_sink() -> tuple[Sink, web.AppRunner]:
    sink = Sink()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", sink.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink.base_url = f"http://127.0.0.1:{port}"
    return sink, runner
