"""RunService.GetRunStats against a real server: runs created and finished per bucket and final status,
percentiles of waits and attempt durations, every job's unfinished runs, the job filter, the checks of the
window and bucket, and projects kept apart."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client import (
    AsyncClient,
    Client,
    DurationPercentiles,
    InvalidArgumentError,
    JobRunQueue,
    NotFoundError,
    RunStats,
    RunStatsBucket,
)
from strait_client.v1 import job_pb2, run_pb2
from strait_client.v1.run_pb2 import RunStatus as S
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, connect, eventually
from tests.integration.test_api_contract import details, violations
from tests.sink import Reply, Sink

FAILED = {S.RUN_STATUS_FAILED, S.RUN_STATUS_DEAD_LETTER, S.RUN_STATUS_TIMED_OUT, S.RUN_STATUS_CRASHED,
          S.RUN_STATUS_SYSTEM_FAILED}
KIND = {S.RUN_STATUS_COMPLETED: "completed", S.RUN_STATUS_CANCELED: "canceled", S.RUN_STATUS_EXPIRED: "expired",
        **dict.fromkeys(FAILED, "failed")}
DONE = tuple(KIND)
LATER = timedelta(hours=1)


async def stats(api: Api, **request: object) -> run_pb2.GetRunStatsResponse:
    return await api.runs.GetRunStats(run_pb2.GetRunStatsRequest(**request), metadata=api.metadata)


async def batch(api: Api, job: job_pb2.Job, *options: job_pb2.RunOptions) -> list[run_pb2.Run]:
    resp = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=list(options)),
                                          metadata=api.metadata)
    return list(resp.runs)


def at(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def later() -> job_pb2.RunOptions:
    return job_pb2.RunOptions(scheduled_time=at(datetime.now(UTC) + LATER))


def time_of(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def counts(b: run_pb2.RunStatsBucket) -> dict[str, int]:
    return {"created": b.created, "completed": b.completed, "failed": b.failed, "canceled": b.canceled,
            "expired": b.expired}


def expected_buckets(resp: run_pb2.GetRunStatsResponse, runs: list[run_pb2.Run]) -> list[dict[str, int]]:
    """What each bucket should count, worked out from the runs as GetRun shows them."""
    start, width = time_of(resp.start_time), resp.bucket.ToTimedelta()
    out = [Counter({"created": 0, "completed": 0, "failed": 0, "canceled": 0, "expired": 0})
           for _ in resp.buckets]
    for run in runs:
        out[(time_of(run.create_time) - start) // width]["created"] += 1
        if run.status in KIND:
            out[(time_of(run.finish_time) - start) // width][KIND[run.status]] += 1
    return [dict(c) for c in out]


def nearest_rank(values: list[timedelta], q: float) -> timedelta:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def wait_of(run: run_pb2.Run) -> timedelta:
    """From when the run was due to its first attempt's start."""
    first = time_of(run.attempts[0].start_time) if run.attempt > 1 else time_of(run.start_time)
    return max(first - max(time_of(run.create_time), time_of(run.scheduled_time)), timedelta(0))


async def finished(api: Api, runs: list[run_pb2.Run]) -> list[run_pb2.Run]:
    return [await api.wait_status(r.id, *DONE) for r in runs]


async def test_counts_runs_created_and_finished_per_bucket_by_final_status(app: App, api: Api, settings: Settings,
                                                                          sink: Sink) -> None:
    ok = await api.create_job("ok", sink.url("/ok"))
    broken = await api.create_job("broken", sink.script("/broken", then=Reply(status=503)), max_attempts=1)
    release = asyncio.Event()
    held = await api.create_job("held", sink.script("/held", Reply(block=release)), max_concurrency=1)
    done = await batch(api, ok, *[job_pb2.RunOptions()] * 3)
    dead = await batch(api, broken, job_pb2.RunOptions(), job_pb2.RunOptions())
    [busy] = await batch(api, held, job_pb2.RunOptions())
    await sink.wait_for(1, "/held")
    # Held back by the job's limit: one expires, one is canceled.
    [expiring, canceled] = await batch(api, held, job_pb2.RunOptions(ttl=Duration(seconds=1)), job_pb2.RunOptions())
    await api.runs.CancelRun(run_pb2.CancelRunRequest(id=canceled.id), metadata=api.metadata)
    other = await connect(app, settings.admin_key)  # another project's runs are never counted
    await finished(other, await batch(other, await other.create_job("ok", sink.url("/other")),
                                      *[job_pb2.RunOptions()] * 4))
    runs = await finished(api, [*done, *dead, expiring, canceled])
    assert Counter(r.status for r in runs) == {S.RUN_STATUS_COMPLETED: 3, S.RUN_STATUS_DEAD_LETTER: 2,
                                               S.RUN_STATUS_EXPIRED: 1, S.RUN_STATUS_CANCELED: 1}

    resp = await stats(api, bucket=Duration(seconds=60))
    assert counts(resp.totals) == {"created": 8, "completed": 3, "failed": 2, "canceled": 1, "expired": 1}
    assert [counts(b) for b in resp.buckets] == expected_buckets(resp, [*runs, await api.get_run(busy.id)])
    assert len(resp.buckets) == 60
    assert [time_of(b.start_time) for b in resp.buckets] == [
        time_of(resp.start_time) + timedelta(minutes=i) for i in range(60)]
    assert time_of(resp.start_time).second == 0 and time_of(resp.start_time).microsecond == 0
    assert time_of(resp.buckets[-1].start_time) <= time_of(resp.end_time) < time_of(resp.buckets[-1].start_time) + \
        timedelta(minutes=1)
    assert [(q.job_slug, q.queued, q.delayed, q.executing) for q in resp.queues] == [("held", 0, 0, 1)]

    theirs = await stats(other)
    assert counts(theirs.totals) == {"created": 4, "completed": 4, "failed": 0, "canceled": 0, "expired": 0}
    assert list(theirs.queues) == []
    release.set()
    await api.wait_status(busy.id, S.RUN_STATUS_COMPLETED)
    await other.channel.close()


async def test_default_window_is_the_last_hour_in_five_minute_buckets(api: Api) -> None:
    before = datetime.now(UTC)
    resp = await stats(api)
    assert resp.bucket.ToTimedelta() == timedelta(minutes=5) and len(resp.buckets) == 12
    start, end = time_of(resp.start_time), time_of(resp.end_time)
    assert start.minute % 5 == 0 and start.second == 0 and start.microsecond == 0
    assert timedelta(minutes=55) <= end - start < timedelta(hours=1) and before <= end
    assert counts(resp.totals) == dict.fromkeys(("created", "completed", "failed", "canceled", "expired"), 0)
    assert resp.totals.wait.count == 0 and not resp.totals.wait.HasField("p50")
    assert list(resp.queues) == []


async def test_percentiles_of_waits_and_attempt_durations_over_finished_runs(api: Api, sink: Sink) -> None:
    # One at a time, 0.2 s each: the five runs of a batch wait about 0, 0.2, 0.4, 0.6 and 0.8 s to start.
    serial = await api.create_job("serial", sink.script("/serial", then=Reply(delay=0.2)), max_concurrency=1)
    # A retried run: its wait ends at its first attempt's start, its duration is its last attempt's.
    retried = await api.create_job("retried", sink.script("/retried", Reply(status=503), then=Reply(delay=0.1)),
                                   retry_policy=job_pb2.RetryPolicy(initial_delay=Duration(nanos=300_000_000)))
    runs = await batch(api, serial, *[job_pb2.RunOptions()] * 5) + await batch(api, retried, job_pb2.RunOptions())
    runs = await finished(api, runs)
    assert {r.status for r in runs} == {S.RUN_STATUS_COMPLETED} and runs[-1].attempt == 2

    resp = await stats(api)
    waits = [wait_of(r) for r in runs]
    durations = [time_of(r.finish_time) - time_of(r.start_time) for r in runs]
    for got, values in ((resp.totals.wait, waits), (resp.totals.duration, durations)):
        assert got.count == 6
        assert got.p50.ToTimedelta() == nearest_rank(values, 0.5)
        assert got.p95.ToTimedelta() == nearest_rank(values, 0.95)
    assert resp.totals.wait.p95.ToTimedelta() >= timedelta(seconds=0.8)  # the last of the serial runs
    assert timedelta(seconds=0.2) <= resp.totals.duration.p50.ToTimedelta() < timedelta(seconds=5)
    # Each bucket's percentiles are over the runs that finished in it.
    start, width = time_of(resp.start_time), resp.bucket.ToTimedelta()
    for i, b in enumerate(resp.buckets):
        mine = [r for r in runs if (time_of(r.finish_time) - start) // width == i]
        assert b.wait.count == b.duration.count == len(mine)
        if mine:
            assert b.wait.p50.ToTimedelta() == nearest_rank([wait_of(r) for r in mine], 0.5)


async def test_queues_count_every_jobs_queued_delayed_and_executing_runs(api: Api, sink: Sink) -> None:
    release = asyncio.Event()
    busy = await api.create_job("busy", sink.script("/busy", then=Reply(block=release)), max_concurrency=1)
    backoff = await api.create_job("backoff", sink.script("/backoff", then=Reply(status=503)), max_attempts=3,
                                   retry_policy=job_pb2.RetryPolicy(initial_delay=Duration(seconds=3600)))
    quiet = await api.create_job("quiet", sink.url("/quiet"))
    await finished(api, await batch(api, quiet, job_pb2.RunOptions()))
    [executing] = await batch(api, busy, job_pb2.RunOptions())
    await sink.wait_for(1, "/busy")
    await batch(api, busy, job_pb2.RunOptions(), job_pb2.RunOptions(), later())  # 2 held by the limit, 1 later
    [retrying] = await batch(api, backoff, job_pb2.RunOptions())
    await eventually(lambda: _queued_for_retry(api, retrying.id))
    await batch(api, backoff, later(), later())
    # More jobs than a page of anything: every one is listed.
    for i in range(30):
        await batch(api, await api.create_job(f"later-{i:02}", sink.url("/later")), later())

    resp = await stats(api)
    queues = [(q.job_slug, q.queued, q.delayed, q.executing) for q in resp.queues]
    assert queues[:2] == [("busy", 2, 1, 1), ("backoff", 0, 3, 0)]
    assert queues[2:] == [(f"later-{i:02}", 0, 1, 0) for i in range(30)]
    assert {q.job_id for q in resp.queues[:2]} == {busy.id, backoff.id}
    assert (await api.get_run(executing.id)).status == S.RUN_STATUS_EXECUTING
    release.set()


async def _queued_for_retry(api: Api, run_id: str) -> bool:
    run = await api.get_run(run_id)
    return run.status == S.RUN_STATUS_QUEUED and run.attempt == 1


async def test_a_job_filter_counts_only_that_jobs_runs(app: App, api: Api, settings: Settings, sink: Sink) -> None:
    first = await api.create_job("first", sink.url("/first"))
    second = await api.create_job("second", sink.url("/second"))
    await finished(api, await batch(api, first, *[job_pb2.RunOptions()] * 2))
    await finished(api, await batch(api, second, *[job_pb2.RunOptions()] * 3))
    await batch(api, second, later())
    for selector in ("second", second.id):
        resp = await stats(api, job_id=selector)
        assert counts(resp.totals) == {"created": 4, "completed": 3, "failed": 0, "canceled": 0, "expired": 0}
        assert resp.totals.wait.count == resp.totals.duration.count == 3
        assert [(q.job_id, q.delayed) for q in resp.queues] == [(second.id, 1)]
    assert counts((await stats(api, job_id="first")).totals)["created"] == 2
    assert list((await stats(api, job_id="first")).queues) == []

    other = await connect(app, settings.admin_key)
    theirs = await other.create_job("theirs", sink.url("/theirs"))
    for unknown in ("nope", "job_nope", theirs.id):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stats(api, job_id=unknown)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(err.value)["ErrorInfo"].reason == "JOB_NOT_FOUND"  # type: ignore[attr-defined]
    await other.channel.close()


@pytest.mark.parametrize(("request_fields", "field", "says"), [
    ({"window": Duration(seconds=59)}, "window", "must be between 1m and 24h"),
    ({"window": Duration(seconds=86_401)}, "window", "must be between 1m and 24h"),
    ({"window": Duration(seconds=-3600)}, "window", "must be between 1m and 24h"),
    ({"window": Duration(seconds=3600, nanos=-1)}, "window", "must be between 1m and 24h"),
    ({"window": Duration(seconds=2**62)}, "window", "must be between 1m and 24h"),
    ({"bucket": Duration(seconds=30)}, "bucket", "must be between 1m and 24h"),
    ({"bucket": Duration()}, "bucket", "must be between 1m and 24h"),
    ({"bucket": Duration(seconds=7200)}, "bucket", "must not be longer than the window (1h)"),
    ({"window": Duration(seconds=600), "bucket": Duration(seconds=660)}, "bucket",
     "must not be longer than the window (10m)"),
    ({"window": Duration(seconds=86_400), "bucket": Duration(seconds=60)}, "bucket",
     "must divide the window into at most 288 buckets: at least 5m for a window of 24h"),
    ({"job_id": "x" * 129}, "job_id", "must be at most 128 characters"),
])
async def test_out_of_range_windows_and_buckets_are_invalid_arguments(api: Api, request_fields: dict[str, object],
                                                                       field: str, says: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stats(api, **request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err.value) == {field: says}


async def test_the_widest_window_and_finest_bucket_allowed(api: Api) -> None:
    day = await stats(api, window=Duration(seconds=86_400))
    assert len(day.buckets) == 288 and day.bucket.ToTimedelta() == timedelta(minutes=5)
    odd = await stats(api, window=Duration(seconds=3600), bucket=Duration(seconds=7 * 60))
    assert len(odd.buckets) == 9  # rounded up: the window is covered
    minute = await stats(api, window=Duration(seconds=60), bucket=Duration(seconds=60))
    assert len(minute.buckets) == 1


async def test_the_python_clients_return_typed_statistics(app: App, api: Api, sink: Sink) -> None:
    address = f"127.0.0.1:{app.port}"
    job = await api.create_job("typed", sink.script("/typed", then=Reply(delay=0.05)))
    [run] = await finished(api, await batch(api, job, job_pb2.RunOptions()))
    await batch(api, job, later())
    async with AsyncClient(address, api.key) as client:
        got = await client.runs.stats(window=timedelta(minutes=30), bucket=600, job="typed")
        assert isinstance(got, RunStats) and isinstance(got.totals, RunStatsBucket)
        assert got.bucket == timedelta(minutes=10) and len(got.buckets) == 3
        assert got.start_time is not None and got.end_time is not None and got.start_time.tzinfo == UTC
        assert [b.start_time for b in got.buckets] == [got.start_time + timedelta(minutes=10 * i) for i in range(3)]
        assert (got.totals.created, got.totals.completed, got.totals.finished) == (2, 1, 1)
        duration = time_of(run.finish_time) - time_of(run.start_time)
        assert got.totals.duration == DurationPercentiles(1, duration, duration)
        assert got.queues == (JobRunQueue(job.id, "typed", 0, 1, 0),) and got.queues[0].total == 1
        short = await client.runs.stats(job=job.id, window=120)  # the bucket is no longer than the window
        assert (short.bucket, len(short.buckets)) == (timedelta(minutes=2), 1)
        with pytest.raises(InvalidArgumentError) as bad:
            await client.runs.stats(window=timedelta(hours=25), bucket=timedelta(seconds=1))
        assert dict(bad.value.field_violations) == {"window": "must be between 1m and 24h",
                                                   "bucket": "must be between 1m and 24h"}
        with pytest.raises(NotFoundError):
            await client.runs.stats(job="nope")

    def blocking() -> RunStats:
        with Client(address, api.key) as client:
            return client.runs.stats()
    same = await asyncio.to_thread(blocking)  # the server runs on this event loop
    assert (same.bucket, len(same.buckets), same.totals.created) == (timedelta(minutes=5), 12, 2)
