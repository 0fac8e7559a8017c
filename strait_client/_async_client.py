"""The asyncio client (grpc.aio). Same calls as Client, awaited; list() methods are async iterators."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc

from strait_client import _ops, _tracing
from strait_client._client import DEFAULT_RETRY, auth_metadata, channel_options, env_settings
from strait_client._errors import from_rpc_error
from strait_client._ops import DEFAULT_PAGE_SIZE, Dict, Op, Page, RunOptions
from strait_client._retry import Attempts, RetryPolicy
from strait_client.v1 import job_pb2_grpc, project_pb2_grpc, run_pb2_grpc, schedule_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

T = TypeVar("T")


class _AsyncTransport:
    def __init__(self, channel: grpc.aio.Channel, api_key: str, timeout: float,
                 retry: RetryPolicy) -> None:
        self.channel = channel
        self.metadata = auth_metadata(api_key)
        self.timeout = timeout
        self.retry = retry
        self._stubs: dict[str, Any] = {
            "jobs": job_pb2_grpc.JobServiceStub(channel),
            "runs": run_pb2_grpc.RunServiceStub(channel),
            "projects": project_pb2_grpc.ProjectServiceStub(channel),
            "schedules": schedule_pb2_grpc.ScheduleServiceStub(channel),
        }

    async def call(self, op: Op[T]) -> T:
        method = getattr(self._stubs[op.service], op.method)
        attempts = Attempts(self.retry, self.timeout, op.retryable)
        while True:
            try:
                return op.convert(await method(op.request, metadata=self.metadata, timeout=attempts.timeout()))
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if (wait := attempts.wait_after(error)) is None:
                    raise error from err
            await asyncio.sleep(wait)

    def stub(self, service: str) -> Any:
        return self._stubs[service]

    async def pages(self, make: Callable[[str], Op[Page]]) -> AsyncIterator[Dict]:
        token = ""
        while True:
            items, token = await self.call(make(token))
            for item in items:
                yield item
            if not token:
                return


class AsyncJobs:
    """`client.jobs`: job definitions and triggers. Jobs are named by id ("job_...") or by slug."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def create(self, slug: str, endpoint_url: str, **fields: Any) -> Dict:
        """Creates a job; `fields` are other Job fields (name, timeout=timedelta, retry_policy={...}, tags...)."""
        return await self._t.call(_ops.create_job(slug, endpoint_url, fields))

    async def get(self, id_or_slug: str) -> Dict:
        return await self._t.call(_ops.get_job(id_or_slug))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Dict]:
        """Every job of the project, oldest first: `async for job in client.jobs.list()`."""
        return self._t.pages(_ops.list_jobs(page_size))

    async def update(self, id_or_slug: str, *, etag: str = "", **fields: Any) -> Dict:
        """Changes exactly the given fields (a None value resets one to its default). With `etag`, the update
        happens only if the job is unchanged since that etag was read (else AbortedError)."""
        if "slug" in fields and not _ops.is_job_id(id_or_slug):
            id_or_slug = (await self.get(id_or_slug))["id"]
        return await self._t.call(_ops.update_job(id_or_slug, fields, etag))

    async def delete(self, id_or_slug: str, *, etag: str = "") -> Dict:
        """Deletes a job (every unfinished run of it is canceled) and returns it."""
        return await self._t.call(_ops.delete_job(id_or_slug, etag))

    async def trigger(self, id_or_slug: str, payload: Mapping[str, Any] | None = None, *,
                      scheduled_time: datetime | None = None, priority: int | None = None,
                      timeout: timedelta | None = None,  # noqa: ASYNC109 - the run's timeout, not this call's
                      max_attempts: int | None = None, idempotency_key: str = "",
                      tags: Mapping[str, str] | None = None, metadata: Mapping[str, str] | None = None,
                      ttl: timedelta | None = None, concurrency_key: str = "") -> Dict:
        """Creates a run and returns it, with `idempotent_repeat` true when the idempotency key matched an
        existing run (which is returned instead). `ttl`: expire the run if it has not started in time;
        `concurrency_key`: the group the job's max_concurrency_per_key counts this run in."""
        options = RunOptions(payload, scheduled_time, priority, timeout, max_attempts, idempotency_key, tags,
                             metadata, ttl, concurrency_key)
        return await self._t.call(_ops.trigger_job(id_or_slug, options))

    async def batch_trigger(self, id_or_slug: str,
                            runs: Sequence[RunOptions | Mapping[str, Any]], *,
                            full: bool = False) -> builtins.list[Dict]:
        """Creates up to 1,000 runs at once; each item is a payload dict or a RunOptions."""
        return await self._t.call(_ops.batch_trigger_job(id_or_slug, runs, full))


class AsyncRuns:
    """`client.runs`: read, cancel, replay and wait for runs."""

    def __init__(self, transport: _AsyncTransport, jobs: AsyncJobs) -> None:
        self._t = transport
        self._jobs = jobs

    async def get(self, run_id: str) -> Dict:
        return await self._t.call(_ops.get_run(run_id))

    async def list(self, job: str | None = None, statuses: Iterable[str] | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None, *,
                   page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Dict]:
        """Runs, newest first, optionally of one job (id or slug) and in any of `statuses`."""
        if job and not _ops.is_job_id(job):
            job = (await self._jobs.get(job))["id"]
        async for run in self._t.pages(_ops.list_runs(job, statuses, created_after, created_before, page_size)):
            yield run

    async def cancel(self, run_id: str, reason: str = "") -> Dict:
        return await self._t.call(_ops.cancel_run(run_id, reason))

    async def replay(self, run_id: str, idempotency_key: str = "") -> Dict:
        """Creates a new run from a finished one; the result carries `idempotent_repeat`."""
        return await self._t.call(_ops.replay_run(run_id, idempotency_key))

    async def events(self, run_id: str, *, after_sequence: int = 0) -> builtins.list[Dict]:
        """The run's events in sequence order."""
        return [e async for e in self._t.pages(_ops.list_run_events(run_id, after_sequence, 1000))]

    async def watch(self, run_id: str, *, after_sequence: int = 0,
                    timeout: float | None = None) -> AsyncIterator[Dict]:  # noqa: ASYNC109 - mirrors Client
        """The run's events in sequence order, stored then live, until its terminal event.

        Reconnects by itself (from the last sequence received, so nothing is missed or repeated) when the
        connection drops or the server ends the stream at its maximum duration. `timeout` bounds the whole
        watch (TimeoutError)."""
        after = after_sequence
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            call = self._t.stub("runs").WatchRun(_ops.watch_run_request(run_id, after),
                                                  metadata=self._t.metadata, timeout=remaining)
            try:
                async for message in call:
                    if message.WhichOneof("message") != "event":
                        continue
                    event = _ops.event_dict(message.event)
                    after, failures = event["sequence"], 0
                    yield event
                    if _ops.ends_run(event):
                        return
                if _ops.run_finished(await call.trailing_metadata()):
                    return
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    raise TimeoutError(f"run {run_id} did not finish within {timeout}s") from err
                if err.code() not in _ops.RESUMABLE or failures >= 8:
                    raise from_rpc_error(err) from err
                failures += 1
                await asyncio.sleep(_ops.reconnect_delay(failures))
            finally:
                call.cancel()

    async def watch_all(self, *, job: str | None = None, statuses: Iterable[str] | None = None,
                        tags: Mapping[str, str] | None = None, resume_token: str = "",
                        from_start: bool = False) -> AsyncIterator[Dict]:
        """The project's run events in commit order, live, forever (until you stop iterating).

        Each event dict carries `resume_token`; pass the last one back to continue after it. Reconnects by
        itself from the last token when the connection drops or the stream ages out."""
        if job and not _ops.is_job_id(job):
            job = (await self._jobs.get(job))["id"]
        token, failures = resume_token, 0
        while True:
            call = self._t.stub("runs").WatchRuns(
                _ops.watch_runs_request(job, statuses, tags, token, from_start and not token),
                metadata=self._t.metadata)
            try:
                async for message in call:
                    token, failures = message.resume_token or token, 0
                    if message.WhichOneof("message") == "event":
                        yield {**_ops.event_dict(message.event), "resume_token": token}
            except grpc.RpcError as err:
                if err.code() not in _ops.RESUMABLE or failures >= 8:
                    raise from_rpc_error(err) from err
                failures += 1
                await asyncio.sleep(_ops.reconnect_delay(failures))
            finally:
                call.cancel()

    async def wait(self, run_id: str, timeout: float = 60.0) -> Dict:  # noqa: ASYNC109 - mirrors Client
        """Returns the run once it reaches a terminal status (watching its events, not polling);
        TimeoutError after `timeout` seconds."""
        async for _ in self.watch(run_id, timeout=timeout):
            pass
        return await self.get(run_id)


class AsyncSchedules:
    """`client.schedules`: the cron schedules of jobs (Job.cron), named by job id or slug."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def fire_times(self, id_or_slug: str, count: int = 10) -> builtins.list[datetime]:
        """The schedule's next `count` (1..100) fire times, as aware UTC datetimes."""
        return await self._t.call(_ops.schedule_fire_times(id_or_slug, count))

    async def pause(self, id_or_slug: str) -> Dict:
        """Stops the schedule from firing (the job still takes triggers) and returns the job."""
        return await self._t.call(_ops.pause_schedule(id_or_slug))

    async def resume(self, id_or_slug: str) -> Dict:
        """Starts the schedule again from its next tick after now (missed ticks do not fire)."""
        return await self._t.call(_ops.resume_schedule(id_or_slug))

    async def trigger(self, id_or_slug: str) -> Dict:
        """Creates a run now, as the schedule would, and returns it."""
        return await self._t.call(_ops.trigger_schedule(id_or_slug))


class AsyncProjects:
    """`client.projects`: projects (creating one needs the admin key) and API keys."""

    def __init__(self, transport: _AsyncTransport) -> None:
        self._t = transport

    async def create(self, slug: str, name: str = "") -> Dict:
        return await self._t.call(_ops.create_project(slug, name))

    async def get(self, project_id: str) -> Dict:
        return await self._t.call(_ops.get_project(project_id))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Dict]:
        return self._t.pages(_ops.list_projects(page_size))

    async def create_api_key(self, name: str = "", project_id: str = "") -> Dict:
        """Creates a key (in the caller's project unless `project_id`); its `secret` is returned only here."""
        return await self._t.call(_ops.create_api_key(name, project_id))

    def list_api_keys(self, project_id: str = "", *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Dict]:
        return self._t.pages(_ops.list_api_keys(project_id, page_size))

    async def revoke_api_key(self, key_id: str) -> Dict:
        return await self._t.call(_ops.revoke_api_key(key_id))


class AsyncClient:
    """asyncio Strait client on grpc.aio. Every call sends the API key and uses `timeout` seconds as its
    deadline; failures raise StraitError subclasses. Use `async with` or await close().

    Calls safe to repeat are retried when the server answers UNAVAILABLE, as `retry` (a RetryPolicy) says:
    reads, and triggers, each of which carries a fresh request id that its retries reuse, so that a retry
    after a lost answer returns the runs the first attempt created instead of creating them again.

    Calls are traced with OpenTelemetry (a client span each, its context sent to the server) when
    `tracer_provider` is given, or when the OTEL_* variables turn tracing on (docs/metrics-and-tracing.md)."""

    def __init__(self, address: str, api_key: str, *, timeout: float = 30.0,
                 credentials: grpc.ChannelCredentials | None = None,
                 tracer_provider: TracerProvider | None = None, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self.address = address
        self.timeout = timeout
        auth_metadata(api_key)  # refuse an empty key before opening a channel
        provider = tracer_provider or _tracing.env_tracer_provider()
        interceptors = _tracing.aio_interceptors(provider) if provider is not None else None
        if credentials is None:
            channel = grpc.aio.insecure_channel(address, options=channel_options(), interceptors=interceptors)
        else:
            channel = grpc.aio.secure_channel(address, credentials, options=channel_options(),
                                              interceptors=interceptors)
        self._transport = _AsyncTransport(channel, api_key, timeout, retry)
        self.jobs = AsyncJobs(self._transport)
        self.runs = AsyncRuns(self._transport, self.jobs)
        self.projects = AsyncProjects(self._transport)
        self.schedules = AsyncSchedules(self._transport)

    @classmethod
    def from_env(cls, *, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None) -> Self:
        """A client for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY."""
        address, api_key = env_settings()
        return cls(address, api_key, timeout=timeout, credentials=credentials)

    async def close(self) -> None:
        await self._transport.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
