"""`strait serve` as a real subprocess, for tests that need several OS processes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strait_server.config import Settings
from tests.conftest import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve_subprocess(settings: Settings, port: int = 0, **env_overrides: str) -> AsyncIterator[
        tuple[asyncio.subprocess.Process, int]]:
    """`strait serve --mode all` on the test's database, listening on `port` (0: a free one)."""
    port = port or free_port()
    env = dict(os.environ)
    env.update({
        "STRAIT_DATABASE_URL": settings.database_url,
        "STRAIT_REDIS_URL": settings.redis_url,
        "STRAIT_REDIS_NAMESPACE": settings.redis_namespace,
        "STRAIT_ADDRESS": f"127.0.0.1:{port}",
        "STRAIT_ADMIN_KEY": settings.admin_key,
        "STRAIT_JWT_SIGNING_KEY": settings.jwt_signing_key,
        "STRAIT_ALLOW_PRIVATE_ENDPOINTS": "true",
        "STRAIT_HEARTBEAT_INTERVAL": "200ms",
        "STRAIT_SWEEP_INTERVAL": "200ms",
        "STRAIT_POLL_INTERVAL": "200ms",
        "STRAIT_OWNER_STALE_AFTER": "2s",
        "STRAIT_LOG_LEVEL": "warning",
        "STRAIT_API_RATE_LIMIT": "0",  # tests poll faster than clients should (see conftest.settings)
        **env_overrides,
    })
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode", "all",
                                                env=env)
    try:
        await _wait_serving(port, proc)
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def serve_subprocesses(settings: Settings, count: int, **env_overrides: str) -> AsyncIterator[
        list[tuple[asyncio.subprocess.Process, int]]]:
    """`count` `strait serve` processes on the same database, started side by side (all killed at the end)."""
    async with AsyncExitStack() as stack:
        async with asyncio.TaskGroup() as group:  # one failing to start stops (and kills) the others
            started = [group.create_task(stack.enter_async_context(serve_subprocess(settings, **env_overrides)))
                       for _ in range(count)]
        yield [task.result() for task in started]


async def _wait_serving(port: int, proc: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            assert proc.returncode is None, "server exited during start-up"
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return resp.status == health_pb2.HealthCheckResponse.SERVING
        await eventually(serving, timeout=30, interval=0.1)
