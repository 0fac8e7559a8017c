from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import pytest

from strait_client.v1 import job_pb2, job_pb2_grpc, project_pb2, project_pb2_grpc, run_pb2, run_pb2_grpc
from strait_server.app import ALL_ROLES, App, Role
from strait_server.cli import event_loop_factory
from strait_server.config import Settings
from tests.backends import Backend, Databases, _psycopg_url, start_backend
from tests.sink import Sink, start_sink

T = TypeVar("T")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The loop `strait serve` runs on (STRAIT_EVENT_LOOP, uvloop by default), so in-process servers match."""
    factory = event_loop_factory(os.environ.get("STRAIT_EVENT_LOOP", "uvloop"))
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    with start_backend() as b:
        yield b


@pytest.fixture(scope="session")
def databases(backend: Backend) -> Iterator[Databases]:
    dbs = Databases(backend)
    yield dbs
    dbs.close()


@pytest.fixture
def database_url(databases: Databases) -> Iterator[str]:
    url = databases.clone()
    yield url
    try:
        broken = run_invariants_broken(url)
    finally:
        databases.drop(url)
    assert not broken, f"run invariants broken at the end of the test: {broken}"


# Each query finds what breaks one invariant of the run tables (none of them may find anything once a test's
# servers have stopped): the ready queue and the lease table hold exactly the queued and executing runs, and
# each run's event_seq numbers its events 1..event_seq.
RUN_INVARIANTS = {
    "queued runs outside the ready queue, or queue rows of runs not queued": """
        SELECT r.id FROM runs r FULL JOIN run_queue q ON q.run_id = r.id
        WHERE (r.status = 'queued') IS DISTINCT FROM (q.run_id IS NOT NULL) LIMIT 5""",
    "executing runs without a lease, or leases of runs not executing": """
        SELECT coalesce(r.id, l.run_id) FROM runs r FULL JOIN run_leases l ON l.run_id = r.id
        WHERE (r.status = 'executing') IS DISTINCT FROM (l.run_id IS NOT NULL) LIMIT 5""",
    "runs whose event_seq does not number their events": """
        SELECT r.id FROM runs r LEFT JOIN LATERAL (
            SELECT count(*) AS n, coalesce(max(seq), 0) AS top FROM run_events e WHERE e.run_id = r.id) e ON true
        WHERE e.n <> r.event_seq OR e.top <> r.event_seq LIMIT 5""",
}


def run_invariants_broken(url: str) -> dict[str, list[str]]:
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('runs') IS NULL").fetchone() == (True,):
            return {}  # the test rolled the migrations back
        broken = {}
        for what, query in RUN_INVARIANTS.items():
            rows = [str(r[0]) for r in conn.execute(query).fetchall()]
            if rows:
                broken[what] = rows
        return broken


@pytest.fixture
def settings(database_url: str, backend: Backend) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=backend.redis_url,
        redis_namespace=f"t{uuid.uuid4().hex[:12]}",
        address="127.0.0.1:0",
        admin_key="admin-" + secrets.token_hex(16),
        jwt_signing_key=secrets.token_hex(32),
        allow_private_endpoints=True,
        poll_interval=timedelta(milliseconds=200),
        sweep_interval=timedelta(milliseconds=200),
        heartbeat_interval=timedelta(milliseconds=200),
        owner_stale_after=timedelta(seconds=2),
        drain_timeout=timedelta(seconds=5),
        shutdown_grace=timedelta(seconds=1),
        db_pool_min=1,
        db_pool_max=10,
        # Tests poll the API (eventually) far faster than any client should; the limit tests set their own.
        api_rate_limit=0,
    )


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 15.0,
                     interval: float = 0.02) -> T:
    """Polls `check` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class Api:
    """Generated stubs on a real channel, with the project's API key attached."""

    channel: grpc.aio.Channel
    key: str
    admin_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    @property
    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.admin_key}"),)

    @property
    def projects(self) -> project_pb2_grpc.ProjectServiceStub:
        return project_pb2_grpc.ProjectServiceStub(self.channel)

    @property
    def jobs(self) -> job_pb2_grpc.JobServiceStub:
        return job_pb2_grpc.JobServiceStub(self.channel)

    @property
    def runs(self) -> run_pb2_grpc.RunServiceStub:
        return run_pb2_grpc.RunServiceStub(self.channel)

    async def create_job(self, slug: str, endpoint_url: str, **fields: Any) -> job_pb2.Job:
        resp = await self.jobs.CreateJob(
            job_pb2.CreateJobRequest(job=job_pb2.Job(slug=slug, endpoint_url=endpoint_url, **fields)),
            metadata=self.metadata)
        return resp.job

    async def trigger(self, job: job_pb2.Job, **options: Any) -> run_pb2.Run:
        resp = await self.jobs.TriggerJob(
            job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(**options)), metadata=self.metadata)
        return resp.run

    async def get_run(self, run_id: str) -> run_pb2.Run:
        return (await self.runs.GetRun(run_pb2.GetRunRequest(id=run_id), metadata=self.metadata)).run

    async def wait_status(self, run_id: str, *statuses: int, timeout: float = 15.0) -> run_pb2.Run:
        async def check() -> run_pb2.Run | None:
            run = await self.get_run(run_id)
            return run if run.status in statuses else None
        return await eventually(check, timeout)

    async def events(self, run_id: str) -> list[run_pb2.RunEvent]:
        resp = await self.runs.ListRunEvents(run_pb2.ListRunEventsRequest(run_id=run_id, page_size=1000),
                                             metadata=self.metadata)
        return list(resp.events)


async def connect(target: App | int, admin_key: str, project_id: str = "",
                  scopes: tuple[str, ...] = ("workers:connect",)) -> Api:
    """A client for a server (an App, or a port): a new project and key, or a new key for `project_id`. The key
    may also connect workers unless `scopes` says otherwise."""
    port = target if isinstance(target, int) else target.port
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    admin = (("authorization", f"Bearer {admin_key}"),)
    stub = project_pb2_grpc.ProjectServiceStub(channel)
    if not project_id:
        slug = f"p-{uuid.uuid4().hex[:8]}"
        project = await stub.CreateProject(project_pb2.CreateProjectRequest(slug=slug), metadata=admin)
        project_id = project.project.id
    key = await stub.CreateApiKey(project_pb2.CreateApiKeyRequest(project_id=project_id, name="test",
                                                                  scopes=list(scopes)), metadata=admin)
    return Api(channel, key.secret, admin_key)


AppFactory = Callable[..., Awaitable[App]]


@pytest.fixture
async def make_app(settings: Settings) -> AsyncIterator[AppFactory]:
    """Starts extra server processes' worth of components in this process (stopped at teardown)."""
    started: list[App] = []

    async def factory(roles: frozenset[Role] = ALL_ROLES, clock: Callable[[], Any] | None = None,
                      **overrides: Any) -> App:
        application = App(settings.with_(**overrides), roles)
        if clock is not None:
            application.clock = clock
        await application.start(migrate=False)
        started.append(application)
        return application

    yield factory
    for application in reversed(started):
        await application.stop()


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app()


@pytest.fixture
async def api(app: App, settings: Settings) -> AsyncIterator[Api]:
    client = await connect(app, settings.admin_key)
    yield client
    await client.channel.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s, runner = await start_sink()
    yield s
    await runner.cleanup()


