"""Request ids on TriggerJob/BatchTriggerJob: a repeated call returns the first call's runs, never new ones."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import App, Role
from strait_server.config import Settings
from strait_server.scheduler.retention import RetentionSweeper
from strait_server.store.retention import RetentionStore
from strait_server.telemetry.metrics import Metrics
from tests.conftest import Api, AppFactory, connect
from tests.integration.test_api_contract import violations
from tests.sink import Sink


async def _run_count(database_url: str, job_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM runs WHERE job_id = $1", job_id))
    finally:
        await conn.close()


def _batch(job: job_pb2.Job, request_id: str, count: int, **fields: object) -> job_pb2.BatchTriggerJobRequest:
    runs = [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(count)]
    return job_pb2.BatchTriggerJobRequest(id=job.id, request_id=request_id, runs=runs,
                                          **fields)  # type: ignore[arg-type]


async def test_a_repeated_trigger_returns_the_first_run(api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("once", sink.url("/once"))
    request = job_pb2.TriggerJobRequest(id=job.id, request_id=str(uuid.uuid4()),
                                        options=job_pb2.RunOptions(payload_json='{"a": 1}'))
    first = await api.jobs.TriggerJob(request, metadata=api.metadata)
    again = await api.jobs.TriggerJob(request, metadata=api.metadata)
    assert again.run.id == first.run.id
    assert not again.idempotent_repeat and not again.deduplicated  # the first call's answer, not "a repeat"
    assert await _run_count(settings.database_url, job.id) == 1
    # Another id is another call.
    other = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, request_id=str(uuid.uuid4())),
                                      metadata=api.metadata)
    assert other.run.id != first.run.id


async def test_a_repeated_trigger_on_the_queued_path_returns_the_first_run(make_app: AppFactory, sink: Sink,
                                                                           settings: Settings) -> None:
    app = await make_app(frozenset({Role.API}))  # no dispatcher here: the run is queued, not started at once
    api = await connect(app, settings.admin_key)
    job = await api.create_job("queued", sink.url("/queued"))
    request = job_pb2.TriggerJobRequest(slug="queued", request_id="req-1")
    first = await api.jobs.TriggerJob(request, metadata=api.metadata)
    again = await api.jobs.TriggerJob(request, metadata=api.metadata)
    assert first.run.status == run_pb2.RUN_STATUS_QUEUED and again.run.id == first.run.id
    assert await _run_count(settings.database_url, job.id) == 1


async def test_a_repeated_batch_creates_nothing(api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("batch", sink.url("/batch"))
    request = _batch(job, str(uuid.uuid4()), 300, view=job_pb2.RUN_VIEW_FULL)
    first = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    again = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    assert [r.id for r in again.runs] == [r.id for r in first.runs]
    assert [json.loads(r.payload_json)["i"] for r in again.runs] == list(range(300))  # in request order, FULL view kept
    assert list(again.idempotent_repeats) == [False] * 300
    assert await _run_count(settings.database_url, job.id) == 300


async def test_concurrent_repeats_create_the_runs_once(api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("racing", sink.url("/racing"))
    request = _batch(job, "same-request", 200)
    answers = await asyncio.gather(*(api.jobs.BatchTriggerJob(request, metadata=api.metadata) for _ in range(8)))
    assert len({tuple(r.id for r in a.runs) for a in answers}) == 1
    assert await _run_count(settings.database_url, job.id) == 200


async def test_repeats_keep_dedup_and_debounce_answers(api: Api, sink: Sink, settings: Settings) -> None:
    dedup = await api.create_job("dedup", sink.url("/dedup"), dedup_window=Duration(seconds=60))
    runs = [job_pb2.RunOptions(payload_json='{"same": true}'), job_pb2.RunOptions(payload_json='{"same": true}')]
    request = job_pb2.BatchTriggerJobRequest(id=dedup.id, request_id="dd", runs=runs)
    first = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    again = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    assert list(first.idempotent_repeats) == [False, True] == list(again.idempotent_repeats)
    assert [r.id for r in again.runs] == [r.id for r in first.runs]
    assert await _run_count(settings.database_url, dedup.id) == 1

    # Debounced jobs refuse idempotency keys, but take request ids.
    debounced = await api.create_job("debounced", sink.url("/debounced"), debounce_window=Duration(seconds=60))
    request2 = job_pb2.TriggerJobRequest(id=debounced.id, request_id="db", options=job_pb2.RunOptions())
    one = await api.jobs.TriggerJob(request2, metadata=api.metadata)
    two = await api.jobs.TriggerJob(request2, metadata=api.metadata)
    assert two.run.id == one.run.id and not two.debounced
    events = await api.events(one.run.id)
    assert [e.type for e in events].count("debounced") == 0  # the repeat did not push the run back
    assert await _run_count(settings.database_url, debounced.id) == 1


async def test_a_repeat_still_answers_after_the_job_was_disabled(api: Api, sink: Sink) -> None:
    job = await api.create_job("later-off", sink.url("/later-off"))
    request = _batch(job, "before-disable", 3)
    first = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.id, enabled=False),
                                                      update_mask=FieldMask(paths=["enabled"])), metadata=api.metadata)
    again = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    assert [r.id for r in again.runs] == [r.id for r in first.runs]


async def test_a_request_id_reused_for_another_request_is_refused(api: Api, sink: Sink,
                                                                  settings: Settings) -> None:
    job = await api.create_job("first", sink.url("/first"))
    other = await api.create_job("other", sink.url("/other"))
    await api.jobs.BatchTriggerJob(_batch(job, "shared", 2), metadata=api.metadata)
    for request in (_batch(job, "shared", 3), _batch(other, "shared", 2),
                    job_pb2.BatchTriggerJobRequest(slug="first", request_id="shared",
                                                   runs=[job_pb2.RunOptions(), job_pb2.RunOptions()])):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "another job or number of runs" in violations(err.value)["request_id"]
    assert await _run_count(settings.database_url, job.id) == 2
    assert await _run_count(settings.database_url, other.id) == 0


async def test_request_ids_are_per_project(app: App, api: Api, sink: Sink, settings: Settings) -> None:
    other_project = await connect(app, settings.admin_key)
    mine = await api.create_job("mine", sink.url("/mine"))
    theirs = await other_project.create_job("theirs", sink.url("/theirs"))
    a = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=mine.id, request_id="r"), metadata=api.metadata)
    b = await other_project.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=theirs.id, request_id="r"),
                                            metadata=other_project.metadata)
    assert a.run.id != b.run.id and b.run.job_id == theirs.id


@pytest.mark.parametrize("bad", ["x" * 65, "has space", "tab\t", "é"])
async def test_malformed_request_ids_are_refused(api: Api, sink: Sink, settings: Settings, bad: str) -> None:
    job = await api.create_job("strict", sink.url("/strict"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, request_id=bad), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in violations(err.value)
    assert await _run_count(settings.database_url, job.id) == 0


async def test_request_ids_are_forgotten_after_a_day(api: Api, sink: Sink, settings: Settings) -> None:
    job = await api.create_job("forgotten", sink.url("/forgotten"))
    request = _batch(job, "old", 2)
    first = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE trigger_requests SET create_time = now() - interval '25 hours'")
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            # Retention of runs off: request ids are forgotten all the same.
            sweeper = RetentionSweeper(RetentionStore(pool), retention=timedelta(0), interval=timedelta(minutes=1),
                                       batch_size=1, metrics=Metrics(), supervisor=None)  # type: ignore[arg-type]
            await sweeper.run_pass()
        finally:
            await pool.close()
        assert await conn.fetchval("SELECT count(*) FROM trigger_requests") == 0
    finally:
        await conn.close()
    again = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    assert not {r.id for r in again.runs} & {r.id for r in first.runs}
    assert await _run_count(settings.database_url, job.id) == 4
