"""API rate limits per key (key -> project -> server default) and the failed-authentication lockout per
client address, against real servers sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from strait_client.v1 import job_pb2, project_pb2, run_pb2
from strait_server import auth, errors
from strait_server.api.limits import Limiter
from strait_server.app import App, Role
from strait_server.config import Settings
from strait_server.model import ApiRateLimit
from tests.backends import Backend
from tests.conftest import Api, AppFactory, connect, eventually
from tests.support import scrape, value

MINUTE = Duration(seconds=60)


def details(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    out: dict[str, Any] = {}
    for any_ in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                out[cls.__name__] = msg
    return out


async def _list_jobs(api: Api) -> None:
    await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.metadata)


async def _rejected(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def _exhausted_after(api: Api, allowed: int) -> grpc.aio.AioRpcError:
    """Makes `allowed` calls that must pass, then one that must be refused for the rate limit."""
    for _ in range(allowed):
        await _list_jobs(api)
    err = await _rejected(_list_jobs(api))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(err)["ErrorInfo"].reason == "RATE_LIMITED"
    return err


async def _new_project(api: Api, limit: project_pb2.ApiRateLimit | None = None) -> str:
    resp = await api.projects.CreateProject(project_pb2.CreateProjectRequest(
        slug=f"p-{uuid.uuid4().hex[:8]}", api_rate_limit=limit), metadata=api.admin_metadata)
    return resp.project.id


async def _new_key(api: Api, project_id: str, limit: project_pb2.ApiRateLimit | None = None) -> Api:
    resp = await api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(
        project_id=project_id, name="k", api_rate_limit=limit), metadata=api.admin_metadata)
    return Api(api.channel, resp.secret, api.admin_key)


async def test_over_the_limit_is_resource_exhausted_with_retry_info(make_app: AppFactory,
                                                                    settings: Settings) -> None:
    app = await make_app(api_rate_limit=3, api_rate_window=timedelta(seconds=30))
    api = await connect(app, settings.admin_key)
    err = await _exhausted_after(api, 3)
    info = details(err)
    assert info["ErrorInfo"].domain == "strait.dev"
    delay = info["RetryInfo"].retry_delay.ToTimedelta()
    assert timedelta(0) < delay <= timedelta(seconds=30)
    assert info["QuotaFailure"].violations[0].subject.startswith("project:proj_")
    assert "3 calls per 30s" in (err.details() or "")
    # Streams are counted too; the admin key and health checks are not limited.
    stream = api.runs.WatchRuns(run_pb2.WatchRunsRequest(), metadata=api.metadata)
    assert (await _rejected(stream.read())).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for _ in range(5):
        await api.projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=api.admin_metadata)
    health = await health_pb2_grpc.HealthStub(api.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    await api.channel.close()


async def test_a_rejected_call_changes_nothing(make_app: AppFactory, settings: Settings) -> None:
    # API role only: no dispatch adds events behind the test's back.
    app = await make_app(frozenset({Role.API}), api_rate_limit=2, api_rate_window=timedelta(minutes=1))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("one", "https://example.com/hook")
    await api.trigger(job)
    assert (await _rejected(api.trigger(job))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await _rejected(api.create_job("two", "https://example.com/hook"))).code() == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert app.pool is not None
    assert await app.pool.fetchval("SELECT count(*) FROM jobs") == 1
    assert await app.pool.fetchval("SELECT count(*) FROM runs") == 1
    assert await app.pool.fetchval("SELECT count(*) FROM run_events") == 1
    await api.channel.close()


async def test_limits_are_shared_by_every_server_process(make_app: AppFactory, settings: Settings) -> None:
    first = await make_app(frozenset({Role.API}), api_rate_limit=4, api_rate_window=timedelta(minutes=1))
    second = await make_app(frozenset({Role.API}), api_rate_limit=4, api_rate_window=timedelta(minutes=1))
    on_first = await connect(first, settings.admin_key)
    on_second = Api(grpc.aio.insecure_channel(f"127.0.0.1:{second.port}"), on_first.key, settings.admin_key)
    for api in (on_first, on_second, on_first, on_second):
        await _list_jobs(api)
    for api in (on_second, on_first):
        assert (await _rejected(_list_jobs(api))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await on_first.channel.close()
    await on_second.channel.close()


async def test_key_limit_beats_project_limit_beats_server_default(make_app: AppFactory,
                                                                  settings: Settings) -> None:
    app = await make_app(api_rate_limit=2, api_rate_window=timedelta(minutes=1))
    admin = await connect(app, settings.admin_key)
    limited_project = await _new_project(admin, project_pb2.ApiRateLimit(requests=4, window=MINUTE))
    plain_project = await _new_project(admin)
    project_limit = await _new_key(admin, limited_project)
    own_limit = await _new_key(admin, limited_project, project_pb2.ApiRateLimit(requests=6, window=MINUTE))
    default_limit = await _new_key(admin, plain_project)
    await _exhausted_after(project_limit, 4)
    await _exhausted_after(own_limit, 6)
    await _exhausted_after(default_limit, 2)
    # A key with a limit of its own has its own counter; the others share their project's, which a new key
    # does not reset.
    fresh = await _new_key(admin, limited_project)
    await _exhausted_after(fresh, 0)
    keys = await admin.projects.ListApiKeys(project_pb2.ListApiKeysRequest(project_id=limited_project),
                                            metadata=admin.admin_metadata)
    assert sorted(k.api_rate_limit.requests for k in keys.api_keys) == [0, 0, 6]
    got = await admin.projects.GetProject(project_pb2.GetProjectRequest(id=limited_project),
                                          metadata=admin.admin_metadata)
    assert got.project.api_rate_limit.requests == 4 and got.project.api_rate_limit.window.seconds == 60
    await admin.channel.close()


async def test_changed_limits_apply_at_once(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(api_rate_limit=2, api_rate_window=timedelta(minutes=1))
    admin = await connect(app, settings.admin_key)
    project_id = await _new_project(admin)
    api = await _new_key(admin, project_id)
    await _exhausted_after(api, 2)  # the counter stands at 3: refused calls count too
    key_id = (await admin.projects.ListApiKeys(project_pb2.ListApiKeysRequest(project_id=project_id),
                                               metadata=admin.admin_metadata)).api_keys[0].id
    updated = await admin.projects.UpdateApiKey(project_pb2.UpdateApiKeyRequest(
        api_key=project_pb2.ApiKey(id=key_id, api_rate_limit=project_pb2.ApiRateLimit(requests=5, window=MINUTE)),
        update_mask=FieldMask(paths=["api_rate_limit"])), metadata=admin.admin_metadata)
    assert updated.api_key.api_rate_limit.requests == 5
    await _exhausted_after(api, 5)  # a limit of its own: a counter of its own
    # Cleared: back to the project's limit, now raised for every key of the project.
    await admin.projects.UpdateApiKey(project_pb2.UpdateApiKeyRequest(
        api_key=project_pb2.ApiKey(id=key_id), update_mask=FieldMask(paths=["api_rate_limit"])),
        metadata=admin.admin_metadata)
    await admin.projects.UpdateProject(project_pb2.UpdateProjectRequest(
        project=project_pb2.Project(id=project_id, api_rate_limit=project_pb2.ApiRateLimit(requests=8, window=MINUTE)),
        update_mask=FieldMask(paths=["api_rate_limit"])), metadata=admin.admin_metadata)
    await _exhausted_after(api, 5)  # the project's counter again, at 3: calls 4 to 8
    await admin.channel.close()


async def test_only_the_admin_sets_rate_limits(api: Api) -> None:
    limit = project_pb2.ApiRateLimit(requests=10**6, window=MINUTE)
    mask = FieldMask(paths=["api_rate_limit"])
    for call in (
        api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(name="more", api_rate_limit=limit),
                                  metadata=api.metadata),
        api.projects.UpdateApiKey(project_pb2.UpdateApiKeyRequest(
            api_key=project_pb2.ApiKey(id="key_x", api_rate_limit=limit), update_mask=mask), metadata=api.metadata),
        api.projects.UpdateProject(project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(id="proj_x", api_rate_limit=limit), update_mask=mask), metadata=api.metadata),
    ):
        assert (await _rejected(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    bad = project_pb2.ApiRateLimit(requests=0, window=Duration(nanos=500_000_000))
    err = await _rejected(api.projects.CreateProject(project_pb2.CreateProjectRequest(slug="x", api_rate_limit=bad),
                                                     metadata=api.admin_metadata))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"api_rate_limit.requests", "api_rate_limit.window"} <= _fields(err)


def _fields(err: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for any_ in status.details:
        if any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
            return {v.field for v in bad.field_violations}
    return set()


async def test_lockout_blocks_every_key_from_the_address_until_it_ends(make_app: AppFactory,
                                                                       settings: Settings) -> None:
    app = await make_app(auth_lockout="3:3s")
    good = await connect(app, settings.admin_key)
    wrong = Api(good.channel, auth.KEY_PREFIX + "0" * 64, settings.admin_key)
    for _ in range(3):
        assert (await _rejected(_list_jobs(wrong))).code() == grpc.StatusCode.UNAUTHENTICATED
    err = await _rejected(_list_jobs(good))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = details(err)
    assert info["ErrorInfo"].reason == "AUTH_LOCKED_OUT"
    assert timedelta(0) < info["RetryInfo"].retry_delay.ToTimedelta() <= timedelta(seconds=3)
    # Every credential from that address, the admin key too; nothing is written meanwhile.
    assert (await _rejected(_list_jobs(wrong))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await _rejected(good.create_job("j", "https://example.com/hook"))).code() == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await _rejected(good.projects.ListProjects(project_pb2.ListProjectsRequest(),
                                                       metadata=good.admin_metadata))).code() == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    health = await health_pb2_grpc.HealthStub(good.channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    async def admitted() -> bool:
        try:
            await _list_jobs(good)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
        return True

    await eventually(admitted, timeout=10)
    assert app.pool is not None and await app.pool.fetchval("SELECT count(*) FROM jobs") == 0
    await good.channel.close()


async def test_lockout_tiers_grow_with_repeated_failures(backend: Backend) -> None:
    client = aioredis.from_url(backend.redis_url)
    limiter = Limiter(client, f"t{uuid.uuid4().hex[:12]}", default=None,
                      lockout=((2, timedelta(milliseconds=300)), (4, timedelta(seconds=30))),
                      failure_window=timedelta(minutes=1))
    address = "203.0.113.7"

    async def blocked_for() -> float:
        try:
            await limiter.check_blocked(address)
        except errors.ResourceExhausted as exc:
            assert exc.retry_after_seconds is not None
            return exc.retry_after_seconds
        return 0.0

    async def unblocked() -> bool:
        return await blocked_for() == 0.0

    try:
        await limiter.failed(address)
        assert await blocked_for() == 0.0
        await limiter.failed(address)  # 2: first tier
        assert 0 < await blocked_for() <= 0.3
        with pytest.raises(errors.ResourceExhausted):
            await limiter.failed(address)  # refused while blocked, and not counted
        await eventually(unblocked)
        await limiter.failed(address)  # 3: still the first tier
        assert 0 < await blocked_for() <= 0.3
        await eventually(unblocked)
        await limiter.failed(address)  # 4: second tier
        assert 1 < await blocked_for() <= 30
        # Other addresses are unaffected, and so is a valid key's admission elsewhere.
        await limiter.check_blocked("203.0.113.8")
    finally:
        await client.aclose()


async def test_redis_failures_let_calls_through() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    limiter = Limiter(client, "t", default=ApiRateLimit(1, timedelta(minutes=1)),
                      lockout=((1, timedelta(minutes=1)),), failure_window=timedelta(minutes=1))
    principal = auth.Principal(project_id="proj_x", key_id="key_x")
    try:
        for _ in range(3):
            await limiter.failed("192.0.2.1")
            await limiter.check_blocked("192.0.2.1")
            await limiter.admit("192.0.2.1", principal)
    finally:
        await client.aclose()


async def test_the_app_without_limits_answers_normally(make_app: AppFactory, settings: Settings) -> None:
    app: App = await make_app(api_rate_limit=0, auth_lockout="")
    api = await connect(app, settings.admin_key)
    for _ in range(20):
        await _list_jobs(api)
    await api.channel.close()


async def test_keys_minted_by_a_project_key_buy_no_calls(make_app: AppFactory, settings: Settings) -> None:
    """A project key could mint itself keys, each with a fresh counter: 201 triggers in 0.7 s under 5/min."""
    app = await make_app(frozenset({Role.API}), api_rate_limit=5, api_rate_window=timedelta(minutes=1))
    api = await connect(app, settings.admin_key)
    minted = []
    for i in range(3):
        resp = await api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(name=f"m{i}"), metadata=api.metadata)
        minted.append(Api(api.channel, resp.secret, api.admin_key))
    # The three creations counted; two calls are left for every key of the project together.
    await _list_jobs(minted[0])
    await _list_jobs(minted[1])
    for key in (api, *minted):
        err = await _rejected(_list_jobs(key))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(err)["QuotaFailure"].violations[0].subject.startswith("project:proj_")
    await api.channel.close()


async def test_project_keys_create_keys_at_a_bounded_rate_and_up_to_a_cap(make_app: AppFactory,
                                                                          settings: Settings) -> None:
    app = await make_app(frozenset({Role.API}), api_key_create_limit=2, max_api_keys_per_project=4)
    api = await connect(app, settings.admin_key)  # the project's first key

    async def create(metadata: tuple[tuple[str, str], ...], project_id: str = "") -> project_pb2.CreateApiKeyResponse:
        return await api.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(project_id=project_id, name="k"),
                                               metadata=metadata)

    mine = [await create(api.metadata) for _ in range(2)]
    err = await _rejected(create(api.metadata))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "API key creation" in (err.details() or "") and "RetryInfo" in details(err)
    project_id = mine[0].api_key.project_id
    await create(api.admin_metadata, project_id)  # the admin is not rate limited...
    err = await _rejected(create(api.admin_metadata, project_id))  # ...but the cap holds for it too
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(err)["ErrorInfo"].reason == "API_KEY_LIMIT"
    keys = await api.projects.ListApiKeys(project_pb2.ListApiKeysRequest(project_id=project_id),
                                          metadata=api.admin_metadata)
    assert len(keys.api_keys) == 4
    await api.projects.RevokeApiKey(project_pb2.RevokeApiKeyRequest(id=mine[0].api_key.id),
                                    metadata=api.admin_metadata)
    await create(api.admin_metadata, project_id)  # a revoked key frees its place
    await api.channel.close()


async def test_large_requests_in_progress_are_bounded_per_caller(make_app: AppFactory, settings: Settings) -> None:
    """A burst of big batches is refused at once, with a retry delay, instead of growing the server's memory."""
    app = await make_app(frozenset({Role.API}), max_inflight_request_bytes_per_caller=8 * 1024 * 1024)
    api = await connect(app, settings.admin_key)
    job = await api.create_job("big", "https://example.com/hook")
    payload = '{"blob": "' + "x" * 5_000 + '"}'
    batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(payload_json=payload)] * 1000)
    assert app.pool is not None
    async with app.pool.acquire() as conn, conn.transaction():
        # Holds the first batch inside its insert, its 5 MB counted, while the second arrives.
        await conn.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
        first = asyncio.ensure_future(api.jobs.BatchTriggerJob(batch, metadata=api.metadata))

        async def first_is_waiting() -> bool:
            return bool(await app.pool.fetchval(  # type: ignore[union-attr]
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))
        await eventually(first_is_waiting)
        err = await _rejected(api.jobs.BatchTriggerJob(batch, metadata=api.metadata))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details(err)["RetryInfo"].retry_delay.ToTimedelta() == timedelta(seconds=1)
        assert details(err)["ErrorInfo"].reason == "REQUEST_BYTES_IN_PROGRESS"
    assert len((await first).runs) == 1000
    assert await app.pool.fetchval("SELECT count(*) FROM runs") == 1000  # the refused batch wrote nothing
    await api.jobs.BatchTriggerJob(batch, metadata=api.metadata)  # and may be sent again now
    await api.channel.close()


async def _runs_locked(app: App) -> bool:
    assert app.pool is not None
    return bool(await app.pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))


async def test_large_batches_wait_their_turn_unread(make_app: AppFactory, settings: Settings) -> None:
    """Past the batches being read, more wait in line instead of being read (and held in memory) or refused."""
    app = await make_app(frozenset({Role.API}), max_inflight_request_bytes=8 * 1024 * 1024,  # one at a time
                         metrics_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    job = await api.create_job("big", "https://example.com/hook")
    batch = job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions(payload_json='{"blob": "' + "x" * 3_000 + '"}')] * 1000)
    assert app.pool is not None
    async with app.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE runs IN EXCLUSIVE MODE")  # holds the first batch inside its insert
        calls = [asyncio.ensure_future(api.jobs.BatchTriggerJob(batch, metadata=api.metadata))]
        await eventually(lambda: _runs_locked(app))
        calls += [asyncio.ensure_future(api.jobs.BatchTriggerJob(batch, metadata=api.metadata)) for _ in range(3)]

        async def three_waiting() -> bool:
            return value(await scrape(app), "strait_large_requests_waiting") == 3
        await eventually(three_waiting)
        assert not any(c.done() for c in calls)
    answers = await asyncio.gather(*calls)  # served in turn once the first finished: none refused
    assert [len(a.runs) for a in answers] == [1000] * 4
    assert await app.pool.fetchval("SELECT count(*) FROM runs") == 4000
    assert value(await scrape(app), "strait_large_requests_waiting") == 0
    await api.channel.close()


async def test_a_batch_that_waited_too_long_is_refused_unwritten(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(frozenset({Role.API}), max_inflight_request_bytes=8 * 1024 * 1024,
                         large_request_wait=timedelta(milliseconds=300))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("big", "https://example.com/hook")
    # Over 1 MiB: a large batch keeps its turn while it is handled (a small one gives it back once read).
    batch = job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions(payload_json='{"blob": "' + "x" * 1_500 + '"}')] * 1000)
    assert app.pool is not None
    async with app.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
        first = asyncio.ensure_future(api.jobs.BatchTriggerJob(batch, metadata=api.metadata))
        await eventually(lambda: _runs_locked(app))
        err = await _rejected(api.jobs.BatchTriggerJob(batch, metadata=api.metadata))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "waited over 0.3s for its turn" in (err.details() or "")
        assert details(err)["ErrorInfo"].reason == "REQUEST_BYTES_IN_PROGRESS"
        assert details(err)["RetryInfo"].retry_delay.ToTimedelta() == timedelta(seconds=1)
    assert len((await first).runs) == 1000
    assert await app.pool.fetchval("SELECT count(*) FROM runs") == 1000  # the refused batch wrote nothing
    await api.channel.close()


async def test_small_batches_do_not_wait_for_a_large_one(make_app: AppFactory, settings: Settings) -> None:
    """Only large requests are handled a few at a time: a small batch, once read, does not hold its turn."""
    app = await make_app(frozenset({Role.API}), max_inflight_request_bytes=8 * 1024 * 1024,
                         large_request_wait=timedelta(milliseconds=300))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("small", "https://example.com/hook")
    small = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions()] * 10)
    assert app.pool is not None
    async with app.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
        blocked = [asyncio.ensure_future(api.jobs.BatchTriggerJob(small, metadata=api.metadata)) for _ in range(3)]

        async def all_inside() -> bool:
            return await app.pool.fetchval(  # type: ignore[union-attr]
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == 3
        await eventually(all_inside)  # one slot, yet three small batches reached their insert
    assert [len((await b).runs) for b in blocked] == [10, 10, 10]
    await api.channel.close()
