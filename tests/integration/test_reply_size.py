"""No reply passes the message limits: lists of big items page on, and a FULL batch reply that would not fit is
refused before anything is written. The test channels keep gRPC's default 4 MiB receive limit, as clients do."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client import AsyncRunContext
from strait_client.v1 import job_pb2, run_pb2
from strait_server import db
from strait_server.app import App
from strait_server.config import Settings
from strait_server.model import JobSpec, NewRun
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.run_context import RunContextStore
from strait_server.store.runs import RunStore
from tests.conftest import Api, AppFactory, connect
from tests.integration.test_api_contract import violations
from tests.sink import Reply, Sink

KiB = 1024
MiB = 1024 * KiB
# What gRPC clients accept unless configured otherwise.
CLIENT_RECEIVE_LIMIT = 4 * MiB


def _payload(size: int) -> str:
    """A JSON object of `size` bytes."""
    return '{"x": "' + "x" * (size - 9) + '"}'


def _later() -> Timestamp:
    """Runs due in an hour stay delayed: nothing dispatches them during the test."""
    when = Timestamp()
    when.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return when


async def _pages(call: Any, request: Any, limit: int, metadata: Any) -> list[Any]:
    """Every page of a list, each checked against the message limit."""
    pages = []
    while True:
        page = await call(request, metadata=metadata)
        assert page.ByteSize() <= limit
        pages.append(page)
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


async def _run_ids(api: Api) -> list[str]:
    pages = await _pages(api.runs.ListRuns, run_pb2.ListRunsRequest(), CLIENT_RECEIVE_LIMIT, api.metadata)
    return [r.id for p in pages for r in p.runs]


@pytest.mark.parametrize("max_message", [None, 5 * MiB // 2])
@pytest.mark.parametrize("page_size", [0, 1000])
async def test_list_runs_pages_runs_with_1_mib_payloads_under_the_limit(
        make_app: AppFactory, settings: Settings, sink: Sink, max_message: int | None, page_size: int) -> None:
    app = await (make_app(grpc_max_message_bytes=max_message) if max_message else make_app())
    api = await connect(app, settings.admin_key)
    limit = min(max_message or settings.grpc_max_message_bytes, CLIENT_RECEIVE_LIMIT)
    job = await api.create_job("big", sink.script("/big"))
    created = [(await api.trigger(job, payload_json=_payload(MiB - 64), scheduled_time=_later())).id
               for _ in range(10)]
    pages = await _pages(api.runs.ListRuns, run_pb2.ListRunsRequest(page_size=page_size), limit, api.metadata)
    assert len(pages) > 1 and all(p.runs for p in pages)
    assert [r.id for p in pages for r in p.runs] == created[::-1]  # newest first, each once
    assert all(len(r.payload_json) == MiB - 64 for p in pages for r in p.runs)


async def test_list_run_events_pages_big_events_under_the_limit(app: App, api: Api, sink: Sink) -> None:
    job = await api.create_job("chunky", sink.script("/chunky", Reply(202, "")))
    run = await api.trigger(job)
    [request] = await sink.wait_for(1, "/chunky")
    async with AsyncRunContext.from_headers(request.headers, f"127.0.0.1:{app.port}") as ctx:
        # 100 chunks of 64 KiB: about 8.7 MB of events (base64), over the server's 8 MiB limit too.
        assert await ctx.stream_output(bytes([i]) * 64 * KiB for i in range(100)) == 101
        for page_size in (0, 1000):
            pages = await _pages(api.runs.ListRunEvents, run_pb2.ListRunEventsRequest(
                run_id=run.id, page_size=page_size), CLIENT_RECEIVE_LIMIT, api.metadata)
            assert len(pages) > 1 and all(p.events for p in pages)
            events = [e for p in pages for e in p.events]
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert sum(e.type == "output_chunk" for e in events) == 101
        await ctx.complete()


async def _refused_full_then_basic(api: Api, job: job_pb2.Job, runs: list[job_pb2.RunOptions],
                                   existing: list[str]) -> job_pb2.BatchTriggerJobResponse:
    """A FULL batch is INVALID_ARGUMENT on `view` with no run written; the same batch with BASIC succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
            id=job.id, runs=runs, view=job_pb2.RUN_VIEW_FULL), metadata=api.metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "RUN_VIEW_BASIC" in violations(refused.value)["view"]
    assert await _run_ids(api) == existing
    basic = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=runs, view=job_pb2.RUN_VIEW_BASIC), metadata=api.metadata)
    assert len(basic.runs) == len(runs)
    return basic


async def test_full_batch_of_big_payloads_is_refused_before_any_run_is_written(api: Api, sink: Sink) -> None:
    job = await api.create_job("payloads", sink.script("/payloads"))
    runs = [job_pb2.RunOptions(payload_json=_payload(MiB - 64), scheduled_time=_later()) for _ in range(5)]
    basic = await _refused_full_then_basic(api, job, runs, [])
    assert set(await _run_ids(api)) == {r.id for r in basic.runs}
    fits = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=runs[:3], view=job_pb2.RUN_VIEW_FULL), metadata=api.metadata)
    assert [len(r.payload_json) for r in fits.runs] == [MiB - 64] * 3


async def test_full_batch_echoing_big_job_tags_is_refused(api: Api, sink: Sink) -> None:
    # Each run carries the job's 20 KiB of tags: 450 of them make a reply over the server's 8 MiB.
    tags = {f"t{i}": "v" * 1000 for i in range(20)}
    job = await api.create_job("tagged", sink.script("/tagged"), tags=tags)
    await _refused_full_then_basic(api, job, [job_pb2.RunOptions(scheduled_time=_later())] * 450, [])
    fits = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions(scheduled_time=_later())] * 150, view=job_pb2.RUN_VIEW_FULL),
        metadata=api.metadata)
    assert len(fits.runs) == 150 and all(dict(r.tags) == tags for r in fits.runs)


async def test_full_batch_whose_key_returns_a_big_earlier_run_is_refused(api: Api, sink: Sink) -> None:
    # The request is small, but each of its keyed runs returns the earlier 1 MiB run.
    job = await api.create_job("keyed", sink.script("/keyed"))
    first = await api.trigger(job, payload_json=_payload(MiB - 64), idempotency_key="k", scheduled_time=_later())
    runs = [job_pb2.RunOptions(scheduled_time=_later())] + [job_pb2.RunOptions(idempotency_key="k")] * 5
    basic = await _refused_full_then_basic(api, job, runs, [first.id])
    assert list(basic.idempotent_repeats) == [False] + [True] * 5
    assert [r.id for r in basic.runs[1:]] == [first.id] * 5


async def test_full_batch_debounced_into_a_big_run_is_refused(api: Api, sink: Sink) -> None:
    # Every trigger of a debounce key returns the key's run, which carries the last trigger's payload.
    job = await api.create_job("debounced", sink.script("/debounced"), debounce_window={"seconds": 600})
    runs = [job_pb2.RunOptions(debounce_key="d")] * 5 + [
        job_pb2.RunOptions(debounce_key="d", payload_json=_payload(MiB - 64))]
    basic = await _refused_full_then_basic(api, job, runs, [])
    assert len({r.id for r in basic.runs}) == 1


async def test_list_jobs_pages_big_jobs_under_the_limit(api: Api, sink: Sink) -> None:
    # About 84 KB each (64 metadata entries and 20 tags of 1,000 characters): 60 pass the client's 4 MiB.
    metadata = {f"m{i}": "v" * 1000 for i in range(64)}
    tags = {f"t{i}": "v" * 1000 for i in range(20)}
    for i in range(60):
        await api.create_job(f"j{i:02}", sink.script("/j"), metadata=metadata, tags=tags)
    for page_size in (0, 1000):
        pages = await _pages(api.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=page_size),
                             CLIENT_RECEIVE_LIMIT, api.metadata)
        assert len(pages) > 1 and all(p.jobs for p in pages)
        assert [j.slug for p in pages for j in p.jobs] == [f"j{i:02}" for i in range(60)]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def test_the_store_reads_little_more_than_a_page_of_big_items(pool: asyncpg.Pool) -> None:
    project = await ProjectStore(pool).create("big", "big")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x"))
    runs = RunStore(pool)
    written = await runs.insert_dispatching(project.id, job.id, "", NewRun(), "owner")
    assert written is not None
    run = written[0]
    for _ in range(10):  # 64 KiB of random text each, which storage cannot compress
        blob = base64.b64encode(os.urandom(48 * KiB)).decode()
        await RunContextStore(pool).append(run.id, 1, "log", "", {"blob": blob})
    listed = await runs.event_page(project.id, run.id, 0, 1001, 150 * KiB)
    # Queued, executing, then three logs: the third brings the total past 150 KiB, and is the last read.
    assert [e.seq for e in listed.items] == [1, 2, 3, 4, 5] and listed.cut
    listed = await runs.event_page(project.id, run.id, 10, 1001, 150 * KiB)
    assert [e.seq for e in listed.items] == [11, 12] and not listed.cut

    await runs.insert_for_job(project.id, job.id, "", [NewRun(payload=_payload(MiB - 64))] * 10)

    async def list_runs(limit: int) -> tuple[int, bool]:
        listed = await runs.list_runs(project.id, job_id=None, statuses=None, after=None, before=None, cursor=None,
                                      limit=limit, max_bytes=5 * MiB // 2)
        return len(listed.items), listed.cut
    # The third run brings the total past 2.5 MiB: it is the last read, and the list says it stopped short.
    assert await list_runs(51) == (3, True)
    assert await list_runs(3) == (3, False)
    assert await list_runs(2) == (2, False)
