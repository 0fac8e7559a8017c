"""Serves the metrics registry at GET /metrics on STRAIT_METRICS_ADDRESS, on the server's own event loop
(aiohttp), so that values computed at scrape time can be awaited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from strait_server.config import listening_socket
from strait_server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# How long a scrape waits for values read from the database before it answers without them.
REFRESH_TIMEOUT_S = 5.0


class MetricsServer:
    def __init__(self, metrics: Metrics, address: str,
                 refresh: Callable[[float], Awaitable[None]] | None = None) -> None:
        self._metrics = metrics
        self._address = address
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        sock = listening_socket(self._address, "STRAIT_METRICS_ADDRESS")
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        log.info("serving metrics", extra={"action": "metrics_serve", "address": self._address, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self._refresh is not None:
            try:
                await asyncio.wait_for(self._refresh(REFRESH_TIMEOUT_S), REFRESH_TIMEOUT_S + 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a slow or unreachable database must not fail the whole scrape
                log.warning("metrics refresh failed: %s", exc, extra={"action": "metrics_refresh_error"})
        return web.Response(body=generate_latest(self._metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
