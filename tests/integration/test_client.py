"""The ergonomic client (strait_client.Client / AsyncClient) against a real server, database and endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from strait_client import (
    AbortedError,
    ApiKey,
    ApiRateLimit,
    AsyncClient,
    AttemptRecord,
    BudgetAction,
    CircuitState,
    Client,
    ClientConfig,
    CreatedApiKey,
    EndpointCircuit,
    ExecutionMode,
    FailedPreconditionError,
    FeedEvent,
    InvalidArgumentError,
    Job,
    JobRetryPolicy,
    Keepalive,
    NotFoundError,
    PermissionDeniedError,
    Project,
    ResourceExhaustedError,
    RetryStrategy,
    Run,
    RunEvent,
    RunOptions,
    RunStatus,
    StraitError,
    TriggeredRun,
    UnauthenticatedError,
    UnavailableError,
)
from strait_client.v1 import job_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink
from tests.support import scrape, value


def address(app: App) -> str:
    return f"127.0.0.1:{app.port}"


def is_utc(value: object) -> bool:
    return isinstance(value, datetime) and value.utcoffset() == timedelta(0)


async def test_job_crud(app: App, api: Api, sink: Sink) -> None:
    url = sink.script("/crud")
    async with AsyncClient(address(app), api.key) as client:
        job = await client.jobs.create("crud", url, name="CRUD", timeout=timedelta(seconds=10),
                                       retry_policy={"strategy": "fixed", "initial_delay": timedelta(seconds=2)},
                                       tags={"team": "a"}, max_attempts=5)
        assert job.id.startswith("job_") and job.slug == "crud" and job.name == "CRUD"
        assert job.timeout == timedelta(seconds=10) and job.max_attempts == 5
        assert isinstance(job, Job)
        assert job.retry_policy == JobRetryPolicy(RetryStrategy.FIXED, timedelta(seconds=2), timedelta(hours=1))
        assert job.execution_mode is ExecutionMode.HTTP and job.execution_mode == "http"
        assert job.enabled is True and job.queue == "default"
        assert job.tags == {"team": "a"} and job.metadata == {}
        assert is_utc(job.create_time) and is_utc(job.update_time)

        assert await client.jobs.get(job.id) == job
        assert await client.jobs.get("crud") == job

        others = [await client.jobs.create(f"other-{i}", url) for i in range(3)]
        listed = [j async for j in client.jobs.list(page_size=2)]  # two pages and a bit
        assert [j.id for j in listed] == [job.id] + [o.id for o in others]

        # Only the named fields change; a dict names sub-fields, so the strategy survives.
        updated = await client.jobs.update("crud", enabled=False, description="d",
                                           retry_policy={"max_delay": timedelta(minutes=5)})
        assert updated.enabled is False and updated.description == "d" and updated.name == "CRUD"
        assert updated.retry_policy == JobRetryPolicy(RetryStrategy.FIXED, timedelta(seconds=2), timedelta(minutes=5))
        assert updated.etag != job.etag
        # Renaming by slug resolves the id first.
        renamed = await client.jobs.update("crud", slug="crud-2", etag=updated.etag)
        assert renamed.id == job.id and renamed.slug == "crud-2" and renamed.enabled is False
        # A message instance replaces the whole sub-message (unset sub-fields take their defaults).
        replaced = await client.jobs.update(job.id, retry_policy=job_pb2.RetryPolicy(max_delay=Duration(seconds=30)))
        assert replaced.retry_policy == JobRetryPolicy(RetryStrategy.EXPONENTIAL, timedelta(seconds=1),
                                                       timedelta(seconds=30))
        # So does a JobRetryPolicy, e.g. one read from another job.
        again = await client.jobs.update(job.id, retry_policy=job.retry_policy)
        assert again.retry_policy == job.retry_policy
        with pytest.raises(dataclasses.FrozenInstanceError):
            job.name = "changed"  # type: ignore[misc]
        with pytest.raises(AbortedError) as stale:
            await client.jobs.update(job.id, name="late", etag=job.etag)
        assert stale.value.code == grpc.StatusCode.ABORTED

        deleted = await client.jobs.delete("crud-2")
        assert deleted.id == job.id
        with pytest.raises(NotFoundError) as missing:
            await client.jobs.get(job.id)
        assert (missing.value.resource_type, missing.value.resource_name) == ("job", job.id)
        assert missing.value.reason == "JOB_NOT_FOUND"


async def test_trigger_and_wait_decodes_the_run(app: App, api: Api, sink: Sink) -> None:
    url = sink.script("/work")
    async with AsyncClient(address(app), api.key) as client:
        job = await client.jobs.create("work", url, tags={"env": "test"})
        payload = {"n": 12345678901234567890, "nested": {"list": [1, 2.5, None, "x"]}}
        run = await client.jobs.trigger("work", payload, metadata={"who": "me"}, timeout=timedelta(seconds=30),
                                        tags={"kind": "unit"})
        assert run.id.startswith("run_") and run.job_id == job.id
        assert isinstance(run, TriggeredRun) and isinstance(run.status, RunStatus)
        assert run.status in ("queued", "executing", "completed") and run.idempotent_repeat is False
        assert (run.deduplicated, run.debounced) == (False, False)
        assert run.payload == payload and run.timeout == timedelta(seconds=30)
        assert run.tags == {"env": "test", "kind": "unit"} and run.metadata == {"who": "me"}

        done = await client.runs.wait(run.id, timeout=15)
        assert type(done) is Run and done.status is RunStatus.COMPLETED and done.is_terminal
        assert done.output == {"ok": True} and done.error == ""
        assert is_utc(done.finish_time) and is_utc(done.start_time)
        [attempt] = done.attempts
        assert isinstance(attempt, AttemptRecord) and isinstance(done.attempts, tuple)
        assert attempt.status_code == 200 and isinstance(attempt.duration, timedelta)
        assert attempt.endpoint_url == url
        [received] = sink.for_path("/work")
        assert received.json() == payload and received.run_id == run.id

        events = await client.runs.events(run.id)
        assert all(isinstance(e, RunEvent) for e in events) and events[-1].ends_run
        assert [(e.from_status, e.to_status) for e in events] == [
            (None, "queued"), ("queued", "executing"), ("executing", "completed")]
        assert [e.sequence for e in events] == [1, 2, 3]
        assert [e.sequence for e in await client.runs.events(run.id, after_sequence=2)] == [3]

        assert [r.id async for r in client.runs.list(job="work")] == [run.id]
        assert [r.id async for r in client.runs.list(job=job.id, statuses=["completed"])] == [run.id]
        assert [r async for r in client.runs.list(statuses=["dead_letter", "failed"])] == []
        assert [r.id async for r in client.runs.list(tags={"kind": "unit", "env": "test"})] == [run.id]
        assert [r async for r in client.runs.list(tags={"kind": "other"})] == []
        after = [r.id async for r in client.runs.list(created_after=done.create_time - timedelta(seconds=1),
                                                          created_before=datetime.now(UTC) + timedelta(minutes=1))]
        assert after == [run.id]


async def test_idempotent_trigger_returns_the_same_run(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("idem", sink.script("/idem"))
        first = await client.jobs.trigger("idem", {"a": 1}, idempotency_key="order-1")
        again = await client.jobs.trigger("idem", {"a": 2}, idempotency_key="order-1")
        assert again.id == first.id and again.payload == {"a": 1}
        assert (first.idempotent_repeat, again.idempotent_repeat) == (False, True)
        await client.runs.wait(first.id, timeout=15)
        assert len(sink.for_path("/idem")) == 1


async def test_batch_trigger(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        job = await client.jobs.create("batch", sink.script("/batch"))
        runs = await client.jobs.batch_trigger(job.id, [
            {"i": 0},
            RunOptions(payload={"i": 1}, priority=7, idempotency_key="b-1", max_attempts=1),
            RunOptions(),
        ], full=True)
        assert [r.payload for r in runs] == [{"i": 0}, {"i": 1}, {}]
        assert [r.priority for r in runs] == [0, 7, 0]
        assert runs[1].idempotency_key == "b-1" and runs[1].max_attempts == 1
        assert [r.idempotent_repeat for r in runs] == [False, False, False]
        assert {(r.deduplicated, r.debounced) for r in runs} == {(None, None)}  # not reported by a batch
        done = [await client.runs.wait(r.id, timeout=15) for r in runs]
        assert {d.status for d in done} == {"completed"}
        repeat = await client.jobs.batch_trigger("batch", [RunOptions(payload={"i": 9}, idempotency_key="b-1")])
        assert [(r.id, r.idempotent_repeat) for r in repeat] == [(runs[1].id, True)]
        # The default BASIC view leaves the payload out of the answer.
        assert repeat[0].payload is None and repeat[0].status == "completed"


async def test_cancel_replay_and_wait_timeout(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("later", sink.script("/later"))
        later = datetime.now(UTC) + timedelta(hours=1)
        run = await client.jobs.trigger("later", {"x": 1}, scheduled_time=later)
        assert run.status == "delayed"
        assert abs(run.scheduled_time - later) < timedelta(milliseconds=1)
        with pytest.raises(TimeoutError):
            await client.runs.wait(run.id, timeout=0.1)
        with pytest.raises(TimeoutError):
            await client.runs.wait(run.id, timeout=timedelta(milliseconds=100))

        canceled = await client.runs.cancel(run.id, reason="not needed")
        assert canceled.status == "canceled"
        with pytest.raises(FailedPreconditionError) as again:
            await client.runs.cancel(run.id)
        assert again.value.precondition_violations[0][1] == run.id

        replay = await client.runs.replay(run.id, idempotency_key="r-1")
        assert replay.replay_of_run_id == run.id and replay.payload == {"x": 1}
        assert replay.idempotent_repeat is False
        repeat = await client.runs.replay(run.id, idempotency_key="r-1")
        assert (repeat.id, repeat.idempotent_repeat) == (replay.id, True)
        assert (await client.runs.wait(replay.id, timeout=15)).status == "completed"


async def test_errors_carry_their_details(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.runs.get("run_missing")
        err = missing.value
        assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "RUN_NOT_FOUND"
        assert (err.resource_type, err.resource_name) == ("run", "run_missing")
        assert "run_missing" in err.message and str(err).startswith("NOT_FOUND: ")

        with pytest.raises(InvalidArgumentError) as bad:
            await client.jobs.create("Not A Slug!", "ftp://example")
        fields = dict(bad.value.field_violations)
        assert set(fields) == {"job.slug", "job.endpoint_url"} and bad.value.reason == "INVALID_ARGUMENT"
        assert bad.value.retry_delay is None and bad.value.resource_type == ""

        await client.jobs.create("off", sink.script("/off"), enabled=False)
        with pytest.raises(FailedPreconditionError) as disabled:
            await client.jobs.trigger("off")
        assert disabled.value.reason == "JOB_DISABLED"

        with pytest.raises(PermissionDeniedError):
            await client.projects.create("nope")

        # Bad input is refused before any call.
        with pytest.raises(TypeError, match="no field 'bogus'"):
            await client.jobs.create("x", "http://x", bogus=1)
        with pytest.raises(ValueError, match="timezone-aware"):
            await client.jobs.trigger("off", scheduled_time=datetime.now())
        with pytest.raises(ValueError, match="not a RunStatus"):
            [r async for r in client.runs.list(statuses=["bogus"])]

    async with AsyncClient(address(app), "strait_not_a_real_key") as bad_key:
        with pytest.raises(UnauthenticatedError) as unauth:
            await bad_key.jobs.get("anything")
        assert unauth.value.reason == "UNAUTHENTICATED" and isinstance(unauth.value, StraitError)


async def test_projects_and_api_keys(app: App, api: Api, settings: Settings) -> None:
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    async with AsyncClient(address(app), settings.admin_key) as admin:
        project = await admin.projects.create(slug, name="Client project")
        assert isinstance(project, Project) and project.id.startswith("proj_") and project.name == "Client project"
        assert project.monthly_budget_microusd is None and project.api_rate_limit is None
        assert is_utc(project.create_time)
        assert await admin.projects.get(project.id) == project
        assert project.id in [p.id async for p in admin.projects.list(page_size=1)]
        updated = await admin.projects.update(project.id, name="Renamed", monthly_budget_microusd=5_000_000,
                                              budget_action=BudgetAction.REJECT,
                                              api_rate_limit=ApiRateLimit(100, timedelta(seconds=1)))
        assert (updated.name, updated.monthly_budget_microusd, updated.budget_action) == (
            "Renamed", 5_000_000, "reject")
        assert updated.api_rate_limit == ApiRateLimit(100, timedelta(seconds=1))
        # Only the named fields change; None clears one (no budget, the server's default limit).
        cleared = await admin.projects.update(project.id, monthly_budget_microusd=None,
                                              api_rate_limit=None)
        assert (cleared.name, cleared.monthly_budget_microusd, cleared.api_rate_limit) == ("Renamed", None, None)
        with pytest.raises(ValueError, match="at least one field"):
            await admin.projects.update(project.id)
        project = await admin.projects.update(project.id, name="Client project")
        created = await admin.projects.create_api_key("ci", project_id=project.id)
        assert created.secret.startswith("strait_") and created.project_id == project.id
        assert created.revoke_time is None and isinstance(created, ApiKey) and isinstance(created, CreatedApiKey)
        assert created.secret not in repr(created)

    async with AsyncClient(address(app), created.secret) as client:
        assert [p.id async for p in client.projects.list()] == [project.id]
        second = await client.projects.create_api_key("second")
        keys = [k async for k in client.projects.list_api_keys()]
        assert [k.id for k in keys] == [created.id, second.id]
        assert all(type(k) is ApiKey and not hasattr(k, "secret") for k in keys)
        renamed_key = await client.projects.update_api_key(second.id, name="second, renamed")
        assert renamed_key.name == "second, renamed" and renamed_key.id == second.id
        with pytest.raises(PermissionDeniedError):  # a key's own rate limit is the admin's to set
            await client.projects.update_api_key(second.id, api_rate_limit=ApiRateLimit(5, timedelta(seconds=1)))
        with pytest.raises(PermissionDeniedError):
            await client.projects.update(project.id, name="mine now")
        revoked = await client.projects.revoke_api_key(second.id)
        assert is_utc(revoked.revoke_time)
    async with AsyncClient(address(app), second.secret) as gone:
        with pytest.raises(UnauthenticatedError):
            await gone.projects.get(project.id)


def sync_scenario(addr: str, key: str, url: str) -> None:
    with Client(addr, key, timeout=10) as client:
        job = client.jobs.create("sync-job", url, priority=3)
        assert client.jobs.get("sync-job").id == job.id
        assert [j.slug for j in client.jobs.list()] == ["sync-job"]
        assert client.jobs.update(job.id, name="Sync", tags={"a": "b"}).tags == {"a": "b"}

        run = client.jobs.trigger("sync-job", {"hello": "world"}, idempotency_key="s-1")
        assert client.jobs.trigger("sync-job", {}, idempotency_key="s-1").id == run.id
        done = client.runs.wait(run.id, timeout=15)
        assert done.status == "completed" and done.output == {"ok": True} and done.priority == 3
        assert [e.to_status for e in client.runs.events(run.id)] == ["queued", "executing", "completed"]

        batch = client.jobs.batch_trigger(job.id, [{"i": 1}, RunOptions(payload={"i": 2}, priority=9)], full=True)
        assert [r.payload["i"] for r in batch] == [1, 2] and batch[1].priority == 9
        assert all(client.runs.wait(r.id, timeout=15).status == "completed" for r in batch)
        assert {r.id for r in client.runs.list(job="sync-job", statuses=["completed"], page_size=1)} == {
            run.id, *(r.id for r in batch)}

        try:
            client.runs.get("run_nope")
        except NotFoundError as err:
            assert (err.resource_type, err.resource_name, err.reason) == ("run", "run_nope", "RUN_NOT_FOUND")
        else:
            raise AssertionError("expected NotFoundError")
        try:
            client.jobs.create("Bad Slug", url)
        except InvalidArgumentError as err:
            assert [f for f, _ in err.field_violations] == ["job.slug"]
        else:
            raise AssertionError("expected InvalidArgumentError")

        assert client.jobs.delete("sync-job").id == job.id
    with Client(addr, "strait_wrong") as bad:
        try:
            bad.runs.get("run_x")
        except UnauthenticatedError as err:
            assert err.code == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("expected UnauthenticatedError")


async def test_sync_client(app: App, api: Api, sink: Sink) -> None:
    # The server and sink run on this event loop, so the blocking client runs in a thread.
    await asyncio.to_thread(sync_scenario, address(app), api.key, sink.script("/sync"))
    assert len(sink.for_path("/sync")) == 3  # one dispatch per run: the idempotent repeat did not add one


async def test_from_env(app: App, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRAIT_ADDRESS", address(app))
    monkeypatch.setenv("STRAIT_API_KEY", api.key)
    async with AsyncClient.from_env(timeout=5) as client:
        assert client.timeout == 5
        with pytest.raises(NotFoundError):
            await client.jobs.get("missing")

    def sync_get() -> list[str]:
        with Client.from_env() as sync:
            return [j.id for j in sync.jobs.list()]
    assert await asyncio.to_thread(sync_get) == []

    monkeypatch.delenv("STRAIT_API_KEY")
    with pytest.raises(ValueError, match="API key"):
        Client.from_env()


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncClient(f"127.0.0.1:{port}", "strait_x", timeout=10) as client:
        with pytest.raises(UnavailableError) as err:
            await client.runs.get("run_x")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.reason == ""


async def test_watch_follows_a_run_across_stream_restarts(make_app: AppFactory, settings: Settings,
                                                          sink: Sink) -> None:
    # Streams end every 300 ms here; the client resumes from its last sequence each time.
    app = await make_app(watch_max_duration=timedelta(milliseconds=300), metrics_address="127.0.0.1:0")

    async def streams_ended() -> float:
        return value(await scrape(app), "strait_grpc_requests_total",
                     method="/strait.v1.RunService/WatchRun", code="OK")
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    url = sink.script("/slow-watch", Reply(503), Reply(200, '{"ok": 1}', block=gate))
    async with AsyncClient(address(app), api.key) as client:
        job = await client.jobs.create("slow-watch", url, retry_policy={"initial_delay": timedelta(milliseconds=10)})
        run = await client.jobs.trigger(job.id, {"n": 1})
        seen = []
        async for event in client.runs.watch(run.id):
            seen.append(event)
            if event.to_status == "executing" and event.attempt == 2:
                # The endpoint is still working when the stream ends: the next event needs a resumed stream.
                await eventually(streams_ended)
                gate.set()
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        assert [e.to_status for e in seen] == ["queued", "executing", "queued", "executing", "completed"]
        assert (await client.runs.wait(run.id, timeout=5)).output == {"ok": 1}
    await api.channel.close()


async def test_sync_watch_and_wait(app: App, api: Api, sink: Sink) -> None:
    url = sink.script("/sync-watch")

    def scenario() -> list[str]:
        with Client(address(app), api.key, timeout=10) as client:
            client.jobs.create("sync-watch", url)
            run = client.jobs.trigger("sync-watch", {"a": 1})
            statuses = [e.to_status for e in client.runs.watch(run.id, timeout=15)]
            assert client.runs.wait(run.id, timeout=5).status == "completed"
            return statuses

    assert await asyncio.to_thread(scenario) == ["queued", "executing", "completed"]


async def test_watch_all_resumes_from_a_token(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("feed-client", sink.script("/feed-client"))
        first = await client.jobs.trigger("feed-client", {"n": 1})
        await client.runs.wait(first.id, timeout=15)
        seen = []
        async for event in client.runs.watch_all(job="feed-client", from_start=True):
            seen.append(event)
            if event.to_status == "completed":
                break
        assert [e.to_status for e in seen] == ["queued", "executing", "completed"]
        assert all(isinstance(e, FeedEvent) and e.resume_token for e in seen)
        second = await client.jobs.trigger("feed-client", {"n": 2})
        rest = []
        async for event in client.runs.watch_all(resume_token=seen[-1].resume_token):
            rest.append(event)
            if event.run_id == second.id and event.to_status == "completed":
                break
        assert {e.run_id for e in rest} == {second.id}  # nothing repeated, nothing missed


def test_run_context_from_an_asgi_scope() -> None:
    from strait_client._run_context import DispatchInfo

    scope = {"type": "http", "headers": [(b"x-run-id", b"run_1"), (b"x-run-token", b"t"), (b"x-attempt", b"2"),
                                         (b"x-last-checkpoint", b'{"c": 1}')]}
    info = DispatchInfo.from_asgi_scope(scope)
    assert (info.run_id, info.attempt, info.token, info.last_checkpoint) == ("run_1", 2, "t", {"c": 1})
    with pytest.raises(ValueError):
        DispatchInfo.from_asgi_scope({"headers": []})


async def test_schedules_and_run_ttl_through_the_client(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("nightly", sink.script("/nightly"), cron="0 3 * * *", timezone="Asia/Tokyo")
        times = await client.schedules.fire_times("nightly", count=2)
        assert [t.astimezone(ZoneInfo("Asia/Tokyo")).hour for t in times] == [3, 3]
        assert times[1] - times[0] == timedelta(days=1)
        paused = await client.schedules.pause("nightly")
        assert paused.schedule_paused is True
        assert (await client.schedules.resume("nightly")).next_fire_time == times[0]
        run = await client.schedules.trigger("nightly")
        assert run.metadata == {"triggered_by": "schedule_trigger"}
        later = await client.jobs.trigger("nightly", {"n": 1}, scheduled_time=datetime.now(UTC) + timedelta(hours=1),
                                          ttl=timedelta(minutes=5))
        assert later.expire_time - later.scheduled_time == timedelta(minutes=5)
        await client.jobs.create("plain-job", sink.script("/plain-job"))
        with pytest.raises(FailedPreconditionError):
            await client.schedules.pause("plain-job")


def _method(details: grpc.aio.ClientCallDetails) -> str:
    return details.method.decode() if isinstance(details.method, bytes) else str(details.method)


class AioUnaryRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the unary methods called through it. (grpc.aio files an interceptor under the first kind it
    implements, so a stream interceptor has to be another object.)"""

    def __init__(self, methods: list[str]) -> None:
        self.methods = methods

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.methods.append(_method(details))
        return await continuation(details, request)


class AioStreamRecorder(grpc.aio.UnaryStreamClientInterceptor):
    """Records the server-streaming methods called through it."""

    def __init__(self, methods: list[str]) -> None:
        self.methods = methods

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.methods.append(_method(details))
        return await continuation(details, request)


class SyncRecorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Records the methods called through it (blocking client)."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.methods.append(details.method)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        self.methods.append(details.method)
        return continuation(details, request)


async def test_config_keepalive_channel_options_and_interceptors(app: App, api: Api, sink: Sink) -> None:
    url = sink.script("/configured")
    methods: list[str] = []
    config = ClientConfig(timeout=timedelta(seconds=10), keepalive=Keepalive(time=timedelta(seconds=20)),
                          interceptors=[AioUnaryRecorder(methods), AioStreamRecorder(methods)])
    async with AsyncClient(address(app), api.key, config=config) as client:
        assert client.timeout == 10.0 and client.config is config
        job = await client.jobs.create("configured", url)
        run = await client.jobs.trigger(job.id, {"a": 1})
        assert [e.to_status async for e in client.runs.watch(run.id, timeout=timedelta(seconds=15))] == [
            "queued", "executing", "completed"]
    assert methods == ["/strait.v1.JobService/CreateJob", "/strait.v1.JobService/TriggerJob",
                       "/strait.v1.RunService/WatchRun"]
    # Extra channel options reach the channel: a tiny receive limit refuses the job's reply.
    async with AsyncClient(address(app), api.key, config=config,
                           channel_options=[("grpc.max_receive_message_length", 64)]) as tiny:
        with pytest.raises(ResourceExhaustedError):
            await tiny.jobs.get(job.id)

    def blocking() -> list[str]:
        sync_recorder = SyncRecorder()
        with Client(address(app), api.key, timeout=timedelta(seconds=10), interceptors=[sync_recorder],
                    keepalive=Keepalive(time=timedelta(seconds=20))) as sync:
            assert sync.timeout == 10.0
            again = sync.jobs.trigger("configured", {"a": 2})
            assert sync.runs.wait(again.id, timeout=timedelta(seconds=15)).status == "completed"
        return sync_recorder.methods
    assert await asyncio.to_thread(blocking) == [
        "/strait.v1.JobService/TriggerJob", "/strait.v1.RunService/WatchRun", "/strait.v1.RunService/GetRun"]

    with pytest.raises(TypeError):
        Client(address(app), api.key, interceptors=[object()])
    with pytest.raises(ValueError, match="positive"):
        AsyncClient(address(app), api.key, timeout=0)


async def test_circuits_are_listed_and_reset(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=1, circuit_open_for=timedelta(hours=1))
    api = await connect(app, settings.admin_key)
    url = sink.script("/tripped", Reply(500), then=Reply(200))
    async with AsyncClient(address(app), api.key) as client:
        assert [c async for c in client.circuits.list()] == []
        job = await client.jobs.create("tripped", url, max_attempts=5,
                                       retry_policy={"initial_delay": timedelta(milliseconds=10)})
        run = await client.jobs.trigger(job.id)

        async def opened() -> list[EndpointCircuit]:
            return [c async for c in client.circuits.list(page_size=1)
                    if c.state is CircuitState.OPEN]
        [circuit] = await eventually(opened)
        assert (circuit.endpoint_url, circuit.consecutive_failures, circuit.last_error) == (
            url, 1, "endpoint returned 500")
        assert is_utc(circuit.open_until) and is_utc(circuit.update_time)

        async def waiting() -> bool:  # as in test_circuits.py: reset once the run waits on the circuit
            got = await client.runs.get(run.id)
            return got.status is RunStatus.QUEUED and got.error_class == "circuit_open"
        await eventually(waiting)
        reset = await client.circuits.reset(url)
        assert reset.state == "closed" and reset.endpoint_url == url
        assert (await client.runs.wait(run.id, timeout=15)).status is RunStatus.COMPLETED

        def blocking() -> list[EndpointCircuit]:
            with Client(address(app), api.key) as sync:
                assert sync.circuits.reset(url).state is CircuitState.CLOSED
                return list(sync.circuits.list())
        assert await asyncio.to_thread(blocking) == []
        with pytest.raises(InvalidArgumentError):
            await client.circuits.reset("")
    await api.channel.close()
