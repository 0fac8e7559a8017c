"""PostgreSQL restarted and crashed under a running `strait serve`, on a cluster of the test's own."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strait_client.v1 import job_pb2, run_pb2
from strait_server.config import Settings
from tests.conftest import Api, connect, eventually
from tests.own_postgres import OwnPostgres, own_postgres
from tests.processes import serve_subprocess
from tests.sink import Reply, Sink

RUNS = 6_000
S = run_pb2


async def _statuses(pg: OwnPostgres) -> Counter[str]:
    conn = await asyncpg.connect(pg.url)
    try:
        return Counter({r["status"]: r["n"] for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM runs GROUP BY status")})
    finally:
        await conn.close()


async def _trigger_backlog(api: Api, job: job_pb2.Job, count: int) -> None:
    for start in range(0, count, 1000):
        n = min(1000, count - start)
        await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
            id=job.id, runs=[job_pb2.RunOptions() for _ in range(n)]), metadata=api.metadata)


async def test_ten_restarts_under_load_complete_every_run_with_at_most_one_extra_post(
        settings: Settings, sink: Sink) -> None:
    async with own_postgres() as pg:
        url = sink.script("/work", then=Reply(200, '{"ok": true}', delay=0.01))
        own = settings.with_(database_url=pg.url)
        async with serve_subprocess(own, STRAIT_DISPATCH_CONCURRENCY="20") as (proc, port):
            api = await connect(port, own.admin_key)
            job = await api.create_job("work", url, max_attempts=3)
            await _trigger_backlog(api, job, RUNS)
            for i in range(10):
                # Dispatching is going on (again) before each restart: the restart hits runs in every state.
                await sink.wait_for(len(sink.received) + 100, "/work", timeout=30)
                await pg.restart("fast" if i % 2 == 0 else "immediate")

            async def all_finished() -> Counter[str] | None:
                statuses = await _statuses(pg)
                return statuses if sum(statuses.values()) == RUNS and set(statuses) == {"completed"} else None
            try:
                await eventually(all_finished, timeout=90, interval=0.5)
            finally:
                await api.channel.close()
            assert proc.returncode is None, "the server died"

    posts = Counter(r.run_id for r in sink.for_path("/work"))
    assert len(posts) == RUNS
    assert max(posts.values()) <= 2, posts.most_common(5)


class Callers:
    """Callers triggering a job over and over, counting the status of every answer."""

    def __init__(self, api: Api, job: job_pb2.Job) -> None:
        self._api, self._job = api, job
        self.codes: Counter[grpc.StatusCode] = Counter()
        self.retry_info_missing = 0

    @property
    def refused(self) -> int:
        return sum(n for code, n in self.codes.items() if code is not grpc.StatusCode.OK)

    async def call_until(self, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                await self._api.trigger(self._job)
                self.codes[grpc.StatusCode.OK] += 1
            except grpc.aio.AioRpcError as err:
                self.codes[err.code()] += 1
                status = rpc_status.from_call(err)  # type: ignore[arg-type]
                details = status.details if status is not None else []
                if not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details):
                    self.retry_info_missing += 1
            await asyncio.sleep(0.005)

    def refused_at_least(self, n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return self.refused >= n
        return check

    def answered_at_least(self, n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return self.codes[grpc.StatusCode.OK] >= n
        return check


async def test_calls_during_a_restart_answer_unavailable_with_retry_info(settings: Settings, sink: Sink) -> None:
    async with own_postgres() as pg:
        own = settings.with_(database_url=pg.url)
        async with serve_subprocess(own) as (_proc, port):
            api = await connect(port, own.admin_key)
            callers = Callers(api, await api.create_job("work", sink.url("/work")))
            for mode in ("fast", "immediate", "fast"):
                done = asyncio.Event()
                tasks = [asyncio.create_task(callers.call_until(done)) for _ in range(4)]
                before = callers.refused
                await pg.stop(mode)
                await eventually(callers.refused_at_least(before + 8), timeout=30)  # calls met the database down
                await pg.start()
                callers.codes[grpc.StatusCode.OK] = 0
                await eventually(callers.answered_at_least(20), timeout=30)
                done.set()
                await asyncio.gather(*tasks)
            await api.channel.close()
    failures = {code: n for code, n in callers.codes.items() if code is not grpc.StatusCode.OK}
    assert failures, "no call met the restart"
    assert set(failures) == {grpc.StatusCode.UNAVAILABLE}, failures
    assert callers.retry_info_missing == 0


async def _events_of(pg: OwnPostgres, message: str) -> int:
    conn = await asyncpg.connect(pg.url)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM run_events WHERE message = $1", message)
        return n
    finally:
        await conn.close()


async def test_an_outage_longer_than_the_lease_does_not_make_live_dispatchers_look_dead(
        settings: Settings, sink: Sink) -> None:
    gate = asyncio.Event()
    url = sink.script("/work", then=Reply(200, '{"ok": true}', block=gate))
    async with own_postgres() as pg:
        own = settings.with_(database_url=pg.url)
        async with serve_subprocess(own) as (proc, port):  # owners are stale after 2 s here
            api = await connect(port, own.admin_key)
            job = await api.create_job("work", url, max_attempts=3)
            runs = [await api.trigger(job) for _ in range(20)]
            await sink.wait_for(20, "/work")
            await api.channel.close()
            await pg.stop("fast")
            await asyncio.sleep(4)  # the outage itself: twice the staleness limit, with runs in flight
            await pg.start()
            gate.set()
            api = await connect(port, own.admin_key, job.project_id)
            for r in runs:
                done = await api.wait_status(r.id, S.RUN_STATUS_COMPLETED, timeout=30)
                assert done.attempt == 1
            await api.channel.close()
            assert await _events_of(pg, "dispatcher lost; requeued without spending an attempt") == 0
            assert proc.returncode is None
    assert len(sink.for_path("/work")) == 20  # none was sent twice


async def test_outcomes_lost_in_a_crash_are_written_again_at_once(settings: Settings, sink: Sink) -> None:
    """Settles commit without waiting for the WAL flush; a crash right after loses them, and the dispatcher,
    which knows what it settled, writes them again as soon as the database is back."""
    async with own_postgres() as pg:
        conn = await asyncpg.connect(pg.url)
        # The WAL writer would flush within 200 ms; slowed down, every settle before the crash is lost.
        await conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        await conn.close()
        await pg.restart("fast")
        url = sink.script("/work", then=Reply(200, '{"ok": true}'))
        own = settings.with_(database_url=pg.url)
        async with serve_subprocess(own) as (proc, port):
            api = await connect(port, own.admin_key)
            # A deadline far away: nothing but the dispatcher itself can finish these runs within the test.
            job = await api.create_job("work", url, max_attempts=3, timeout={"seconds": 600})
            await _trigger_backlog(api, job, 200)

            async def settled() -> bool:
                return (await _statuses(pg))["completed"] == 200
            await eventually(settled, timeout=30)
            await pg.restart("immediate")

            async def finished() -> Counter[str] | None:
                statuses = await _statuses(pg)
                return statuses if statuses["completed"] == 200 else None
            await eventually(finished, timeout=30)
            await api.channel.close()
            assert proc.returncode is None
    posts = Counter(r.run_id for r in sink.for_path("/work"))
    assert len(posts) == 200 and max(posts.values()) <= 2
