"""The client's retries: a trigger whose answer was lost after its runs committed is retried, and the retry
returns those runs instead of creating them again (the request id it sends makes the repeat recognisable)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from strait_client import AsyncClient, Client, RetryPolicy, UnavailableError
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, eventually
from tests.sink import Sink


class LossyProxy:
    """A TCP proxy in front of the server that, when armed, cuts the connection at the first bytes the server
    sends back, as a network failure or a killed load balancer would after the server did the work."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self.armed = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target_port)
        try:
            await asyncio.gather(self._pipe(client_r, server_w, client_w, server_w, answers=False),
                                 self._pipe(server_r, client_w, client_w, server_w, answers=True))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (client_w, server_w):
                w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, client_w: asyncio.StreamWriter,
                    server_w: asyncio.StreamWriter, *, answers: bool) -> None:
        while data := await src.read(65536):
            if answers and self.armed:
                self.armed = False  # one cut: the retry's connection works
                self.cuts += 1
                client_w.transport.abort()
                server_w.transport.abort()
                return
            dst.write(data)
            await dst.drain()


@pytest.fixture
async def proxy(app: App) -> AsyncIterator[LossyProxy]:
    p = LossyProxy(app.port)
    await p.start()
    yield p
    await p.close()


@contextlib.asynccontextmanager
async def job_row_locked(database_url: str, job_id: str) -> AsyncIterator[None]:
    """Holds the job's row lock: a trigger's insert waits on it (the runs' foreign key) until released."""
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
    try:
        yield
    finally:
        await tx.rollback()
        await conn.close()


async def _trigger_blocked(database_url: str) -> bool:
    # Not on the lock's connection: a transaction sees pg_stat_activity as it was at its first look.
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))
    finally:
        await conn.close()


async def _run_ids(database_url: str, job_id: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM runs WHERE job_id = $1", job_id)}
    finally:
        await conn.close()


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_batch_whose_answer_was_lost_is_retried_without_duplicates(
        api: Api, sink: Sink, settings: Settings, proxy: LossyProxy, flavour: str) -> None:
    job = await api.create_job("lossy", sink.url("/lossy"))
    payloads = [{"i": i, "pad": "x" * 100} for i in range(1000)]
    async with job_row_locked(settings.database_url, job.id):
        if flavour == "async":
            client = AsyncClient(proxy.address, api.key, timeout=20)
            call = asyncio.ensure_future(client.jobs.batch_trigger(job.id, payloads))
        else:
            sync_client = Client(proxy.address, api.key, timeout=20)
            call = asyncio.ensure_future(asyncio.to_thread(sync_client.jobs.batch_trigger, job.id, payloads))
        await eventually(lambda: _trigger_blocked(settings.database_url))
        proxy.armed = True  # the server's answer to this call will be lost
    # The lock is released: the runs commit, the answer is cut, the client retries with the same request id.
    runs = await call
    if flavour == "async":
        await client.close()
    else:
        sync_client.close()
    assert proxy.cuts == 1
    assert [r.id for r in runs] and {r.id for r in runs} == await _run_ids(settings.database_url, job.id)
    assert len(runs) == 1000


async def test_without_retries_the_lost_answer_is_an_error_and_a_new_call_makes_new_runs(
        api: Api, sink: Sink, settings: Settings, proxy: LossyProxy) -> None:
    """What the request id protects against: each call is a new request, so only the client's own retry
    of the same call is recognised."""
    job = await api.create_job("no-retry", sink.url("/no-retry"))
    async with AsyncClient(proxy.address, api.key, retry=RetryPolicy(max_attempts=1)) as client:
        async with job_row_locked(settings.database_url, job.id):
            call = asyncio.ensure_future(client.jobs.trigger(job.id, {"a": 1}))
            await eventually(lambda: _trigger_blocked(settings.database_url))
            proxy.armed = True
        with pytest.raises(UnavailableError):
            await call
        await client.jobs.trigger(job.id, {"a": 1})
    assert len(await _run_ids(settings.database_url, job.id)) == 2

