"""Every state path of a run through HTTP dispatch, against a real server, database and endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink
from tests.support import ts_in

S = run_pb2
FAST_RETRY = job_pb2.RetryPolicy(initial_delay=Duration(nanos=20_000_000), max_delay=Duration(nanos=50_000_000))


def transitions(events: list[run_pb2.RunEvent]) -> list[tuple[int, int]]:
    return [(e.from_status, e.to_status) for e in events if e.type == "status_change"]


async def test_retry_then_success_records_every_attempt(api: Api, sink: Sink) -> None:
    url = sink.script("/flaky", Reply(503), Reply(429), then=Reply(200, '{"done": 1}'))
    job = await api.create_job("flaky", url, max_attempts=3, retry_policy=FAST_RETRY)
    run = await api.trigger(job, payload_json='{"a": 1}')
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert done.attempt == 3
    assert [a.status_code for a in done.attempts] == [503, 429, 200]
    assert done.attempts[0].error == "endpoint returned 503"
    assert json.loads(done.output_json) == {"done": 1}
    reqs = sink.for_path("/flaky")
    assert [r.headers["X-Attempt"] for r in reqs] == ["1", "2", "3"]
    assert reqs[1].headers["X-Previous-Error"] == "endpoint returned 503"
    assert transitions(await api.events(run.id)) == [
        (0, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING), (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING), (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING), (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_COMPLETED),
    ]


async def test_exhausted_retries_dead_letter_then_replay_creates_linked_run(api: Api, sink: Sink) -> None:
    url = sink.script("/down", then=Reply(500))
    job = await api.create_job("down", url, max_attempts=2, retry_policy=FAST_RETRY)
    run = await api.trigger(job, payload_json='{"order": 7}')
    dead = await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)
    assert dead.attempt == 2 and dead.error == "endpoint returned 500" and dead.error_class == "server"
    assert dead.HasField("finish_time")
    assert len(sink.for_path("/down")) == 2

    sink.script("/down", Reply(200, '{"recovered": true}'))
    replay = await api.runs.ReplayRun(run_pb2.ReplayRunRequest(id=run.id, idempotency_key="r1"),
                                      metadata=api.metadata)
    again = await api.runs.ReplayRun(run_pb2.ReplayRunRequest(id=run.id, idempotency_key="r1"),
                                     metadata=api.metadata)
    assert not replay.idempotent_repeat and again.idempotent_repeat
    assert again.run.id == replay.run.id != run.id
    assert replay.run.replay_of_run_id == run.id
    done = await api.wait_status(replay.run.id, S.RUN_STATUS_COMPLETED)
    assert done.payload_json == '{"order": 7}' and done.attempt == 1
    # The original stays dead-lettered; only one replay was dispatched.
    assert (await api.get_run(run.id)).status == S.RUN_STATUS_DEAD_LETTER
    assert len(sink.for_path("/down")) == 3


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_non_retryable_4xx_goes_straight_to_dead_letter(api: Api, sink: Sink, code: int) -> None:
    url = sink.script(f"/bad{code}", then=Reply(code))
    job = await api.create_job(f"bad{code}", url, max_attempts=5, retry_policy=FAST_RETRY)
    run = await api.trigger(job)
    dead = await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)
    assert dead.attempt == 1
    assert dead.error == f"endpoint returned {code}"
    assert len(sink.for_path(f"/bad{code}")) == 1


async def test_408_is_retried(api: Api, sink: Sink) -> None:
    url = sink.script("/busy", Reply(408), then=Reply(200))
    job = await api.create_job("busy", url, max_attempts=2, retry_policy=FAST_RETRY)
    done = await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_COMPLETED)
    assert [a.status_code for a in done.attempts] == [408, 200]


async def test_timeout_on_last_attempt_is_timed_out(api: Api, sink: Sink) -> None:
    url = sink.script("/slow", then=Reply(200, delay=3.0))
    job = await api.create_job("slow", url, max_attempts=2, retry_policy=FAST_RETRY, timeout=Duration(seconds=1))
    run = await api.trigger(job)
    out = await api.wait_status(run.id, S.RUN_STATUS_TIMED_OUT)
    assert out.attempt == 2
    assert out.error_class == "timeout"
    assert [a.status_code for a in out.attempts] == [0, 0]


async def test_fallback_endpoint_used_for_transient_failure(api: Api, sink: Sink) -> None:
    primary = sink.script("/primary", then=Reply(429))
    fallback = sink.script("/fallback", then=Reply(200, '{"via": "fallback"}'))
    job = await api.create_job("fb", primary, fallback_endpoint_url=fallback, max_attempts=1)
    done = await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_COMPLETED)
    assert json.loads(done.output_json) == {"via": "fallback"}
    assert done.attempts[0].endpoint_url == fallback
    assert len(sink.for_path("/primary")) == 1 and len(sink.for_path("/fallback")) == 1


async def test_fallback_not_used_for_client_errors(api: Api, sink: Sink) -> None:
    primary = sink.script("/p400", then=Reply(400))
    fallback = sink.script("/f400")
    job = await api.create_job("fb400", primary, fallback_endpoint_url=fallback, max_attempts=1)
    await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_DEAD_LETTER)
    assert sink.for_path("/f400") == []


async def test_connection_refused_is_retried_then_dead_letter(api: Api) -> None:
    job = await api.create_job("nowhere", "http://127.0.0.1:9/none", max_attempts=2, retry_policy=FAST_RETRY)
    dead = await api.wait_status((await api.trigger(job)).id, S.RUN_STATUS_DEAD_LETTER)
    assert dead.error_class == "connection" and dead.attempt == 2


async def test_cancel_delayed_run_never_dispatches(api: Api, sink: Sink) -> None:
    job = await api.create_job("later", sink.script("/later"))
    when = Timestamp()
    when.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    run = await api.trigger(job, scheduled_time=when)
    assert run.status == S.RUN_STATUS_DELAYED
    canceled = (await api.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id, reason="not needed"),
                                         metadata=api.metadata)).run
    assert canceled.status == S.RUN_STATUS_CANCELED and canceled.error == "not needed"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert transitions(await api.events(run.id)) == [(0, S.RUN_STATUS_DELAYED),
                                                      (S.RUN_STATUS_DELAYED, S.RUN_STATUS_CANCELED)]


async def test_cancel_queued_run_never_dispatches(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    # One dispatch slot, held by a blocked run, keeps the next run queued.
    app = await make_app(dispatch_concurrency=1)
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    blocker = await api.create_job("blocker", sink.script("/block", Reply(200, block=gate)))
    job = await api.create_job("victim", sink.script("/victim"))
    first = await api.trigger(blocker)
    await sink.wait_for(1, "/block")
    victim = await api.trigger(job)
    assert (await api.get_run(victim.id)).status == S.RUN_STATUS_QUEUED
    canceled = (await api.runs.CancelRun(run_pb2.CancelRunRequest(id=victim.id), metadata=api.metadata)).run
    assert canceled.status == S.RUN_STATUS_CANCELED and canceled.error == "canceled by user"
    gate.set()
    await api.wait_status(first.id, S.RUN_STATUS_COMPLETED)
    second = await api.trigger(job)  # the slot is free again and the queue moves on
    await api.wait_status(second.id, S.RUN_STATUS_COMPLETED)
    assert [r.run_id for r in sink.for_path("/victim")] == [second.id]
    await api.channel.close()


async def test_cancel_executing_run_ignores_late_result(api: Api, app: App, sink: Sink) -> None:
    gate = asyncio.Event()
    job = await api.create_job("long", sink.script("/long", Reply(200, '{"late": true}', block=gate)))
    run = await api.trigger(job)
    await sink.wait_for(1, "/long")
    await api.wait_status(run.id, S.RUN_STATUS_EXECUTING)
    canceled = (await api.runs.CancelRun(run_pb2.CancelRunRequest(id=run.id), metadata=api.metadata)).run
    assert canceled.status == S.RUN_STATUS_CANCELED
    gate.set()

    async def late_result_dropped() -> bool:
        assert app.dispatcher is not None
        return app.dispatcher.outcomes_dropped == 1
    await eventually(late_result_dropped)
    final = await api.get_run(run.id)
    assert final.status == S.RUN_STATUS_CANCELED and final.output_json == ""
    assert transitions(await api.events(run.id))[-1] == (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_CANCELED)


async def test_delayed_run_waits_until_due(api: Api, sink: Sink) -> None:
    job = await api.create_job("delayed", sink.script("/delayed"))
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    ts = Timestamp()
    ts.FromDatetime(due)
    run = await api.trigger(job, scheduled_time=ts)
    assert run.status == S.RUN_STATUS_DELAYED
    [req] = await sink.wait_for(1, "/delayed")
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert done.start_time.ToDatetime(tzinfo=UTC) >= due
    assert done.start_time.ToDatetime(tzinfo=UTC) - due < timedelta(seconds=1)
    assert transitions(await api.events(run.id))[:3] == [
        (0, S.RUN_STATUS_DELAYED), (S.RUN_STATUS_DELAYED, S.RUN_STATUS_QUEUED),
        (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING)]
    assert req.run_id == run.id


async def test_idempotent_repeat_returns_original_run(api: Api, sink: Sink) -> None:
    job = await api.create_job("idem", sink.script("/idem"))
    first = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(idempotency_key="k1", payload_json='{"x": 1}')), metadata=api.metadata)
    second = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        slug="idem", options=job_pb2.RunOptions(idempotency_key="k1", payload_json='{"x": 2}')),
        metadata=api.metadata)
    assert not first.idempotent_repeat and second.idempotent_repeat
    assert second.run.id == first.run.id and second.run.payload_json == '{"x": 1}'
    await api.wait_status(first.run.id, S.RUN_STATUS_COMPLETED)
    # Still the same run after it finished (within 24 hours).
    third = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(idempotency_key="k1")), metadata=api.metadata)
    assert third.idempotent_repeat and third.run.id == first.run.id
    assert len(sink.for_path("/idem")) == 1


async def test_concurrent_idempotent_repeats_create_one_run(api: Api, sink: Sink) -> None:
    job = await api.create_job("idem-c", sink.script("/idem-c"))
    request = job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(idempotency_key="same"))
    results = await asyncio.gather(*(api.jobs.TriggerJob(request, metadata=api.metadata) for _ in range(20)))
    assert len({r.run.id for r in results}) == 1
    assert sum(not r.idempotent_repeat for r in results) == 1
    await api.wait_status(results[0].run.id, S.RUN_STATUS_COMPLETED)
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert len(listed.runs) == 1


async def test_batch_trigger_creates_runs_in_order_with_idempotency(api: Api, sink: Sink) -> None:
    job = await api.create_job("batch", sink.script("/batch"))
    runs = [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(50)]
    runs.append(job_pb2.RunOptions(payload_json='{"i": "keyed"}', idempotency_key="b"))
    runs.append(job_pb2.RunOptions(payload_json='{"i": "dup"}', idempotency_key="b"))
    request = job_pb2.BatchTriggerJobRequest(id=job.id, runs=runs, view=job_pb2.RUN_VIEW_FULL)
    resp = await api.jobs.BatchTriggerJob(request, metadata=api.metadata)
    assert [json.loads(r.payload_json)["i"] for r in resp.runs[:50]] == list(range(50))
    assert resp.runs[50].id == resp.runs[51].id
    assert list(resp.idempotent_repeats) == [False] * 51 + [True]
    await sink.wait_for(51, "/batch")
    for r in resp.runs:
        await api.wait_status(r.id, S.RUN_STATUS_COMPLETED)
    assert sorted(r.run_id for r in sink.for_path("/batch")) == sorted({r.id for r in resp.runs})


async def test_batch_basic_view_shows_each_runs_own_fields(api: Api, sink: Sink) -> None:
    job = await api.create_job("basic", sink.script("/basic"), priority=3)
    later = ts_in(hours=1)
    options = [
        job_pb2.RunOptions(payload_json='{"i": 0}'),
        job_pb2.RunOptions(payload_json='{"i": 1}', priority=7),
        job_pb2.RunOptions(payload_json='{"i": 2}', scheduled_time=later),
        job_pb2.RunOptions(payload_json='{"i": 3}', max_attempts=1, idempotency_key="k"),
        job_pb2.RunOptions(payload_json='{"i": 4}'),
    ]
    resp = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=options),
                                          metadata=api.metadata)
    runs = list(resp.runs)
    assert len({r.id for r in runs}) == 5
    assert {(r.job_id, r.project_id) for r in runs} == {(job.id, job.project_id)}
    assert [r.priority for r in runs] == [3, 7, 3, 3, 3]
    assert [r.max_attempts for r in runs] == [job.max_attempts] * 3 + [1, job.max_attempts]
    assert [r.idempotency_key for r in runs] == ["", "", "", "k", ""]
    assert runs[2].status == S.RUN_STATUS_DELAYED and runs[2].scheduled_time == later
    assert all(r.status == S.RUN_STATUS_QUEUED or r.status == S.RUN_STATUS_EXECUTING
               for r in runs[:2] + runs[3:])
    assert all(r.create_time == runs[0].create_time for r in runs)
    assert not any(r.payload_json for r in runs)  # BASIC leaves payloads out
    for r in runs:  # each id names the run its fields describe
        got = (await api.runs.GetRun(run_pb2.GetRunRequest(id=r.id), metadata=api.metadata)).run
        assert (got.priority, got.max_attempts, got.idempotency_key, got.scheduled_time) == (
            r.priority, r.max_attempts, r.idempotency_key, r.scheduled_time)


async def test_dispatch_headers_signature_and_run_token(api: Api, sink: Sink, settings: Settings) -> None:
    secret = "s" * 24
    job = await api.create_job("signed", sink.script("/signed"), signing_secret=secret)
    assert job.has_signing_secret and job.signing_secret == ""
    run = await api.trigger(job, payload_json='{"hello": "world"}', metadata={"traceparent": "00-abc-def-01"})
    [req] = await sink.wait_for(1, "/signed")
    ts = req.headers["X-Strait-Timestamp"]
    expected = "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Strait-Signature"] == expected
    assert req.headers["X-Job-ID"] == job.id and req.headers["Content-Type"] == "application/json"
    assert req.headers["traceparent"] == "00-abc-def-01"
    claims = jwt.decode(req.headers["X-Run-Token"], settings.jwt_signing_key, algorithms=["HS256"],
                        issuer="strait:run-token")
    assert claims["sub"] == run.id and claims["attempt"] == 1
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)


async def test_priority_orders_dispatch(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(dispatch_concurrency=1)
    api = await connect(app, settings.admin_key)
    job = await api.create_job("prio", sink.script("/prio"))
    when = ts_in(seconds=1)
    low = [await api.trigger(job, scheduled_time=when, priority=0, payload_json='{"p": 0}') for _ in range(3)]
    high = await api.trigger(job, scheduled_time=when, priority=9, payload_json='{"p": 9}')
    reqs = await sink.wait_for(4, "/prio")
    assert reqs[0].run_id == high.id
    assert {r.run_id for r in reqs[1:]} == {r.id for r in low}
    await api.channel.close()


async def test_queued_runs_of_a_disabled_job_wait_until_it_is_enabled(api: Api, sink: Sink) -> None:
    from google.protobuf.field_mask_pb2 import FieldMask

    job = await api.create_job("pausable", sink.script("/pausable"))
    later = ts_in(seconds=2)  # disabled well before it is due, even on a loaded machine
    run = await api.trigger(job, scheduled_time=later)
    mask = FieldMask(paths=["enabled"])
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.id, enabled=False), update_mask=mask),
                             metadata=api.metadata)
    # Due, promoted to queued, but not claimed while the job is disabled.
    await api.wait_status(run.id, S.RUN_STATUS_QUEUED)
    other = await api.create_job("other", sink.script("/other"))
    await api.wait_status((await api.trigger(other)).id, S.RUN_STATUS_COMPLETED)  # the queue moved on
    assert sink.for_path("/pausable") == []
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.id, enabled=True), update_mask=mask),
                             metadata=api.metadata)
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)


async def test_a_run_not_started_within_its_ttl_expires(make_app: AppFactory, settings: Settings,
                                                       sink: Sink) -> None:
    # One dispatch slot, held by a blocked run: the runs behind it wait, so only the TTL can end them.
    app = await make_app(dispatch_concurrency=1)
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    blocker = await api.create_job("ttl-blocker", sink.script("/ttl-block", Reply(200, block=gate)))
    await api.trigger(blocker)
    await sink.wait_for(1, "/ttl-block")
    job = await api.create_job("ttl", sink.script("/ttl"), run_ttl={"seconds": 3600})
    assert job.run_ttl.seconds == 3600
    short = await api.trigger(job, ttl={"nanos": 300_000_000})
    default = await api.trigger(job)
    assert default.expire_time.ToDatetime(tzinfo=UTC) - default.create_time.ToDatetime(tzinfo=UTC) == \
        timedelta(hours=1)
    expired = await api.wait_status(short.id, S.RUN_STATUS_EXPIRED)
    assert expired.error == "run expired while waiting to be dispatched" and expired.attempt == 0
    assert transitions(await api.events(short.id))[-1] == (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXPIRED)
    gate.set()
    await api.wait_status(default.id, S.RUN_STATUS_COMPLETED)
    assert [r.run_id for r in sink.for_path("/ttl")] == [default.id]  # the expired run never went out
    await api.channel.close()


async def test_delayed_run_expires_ttl_after_it_was_due(api: Api, sink: Sink) -> None:
    job = await api.create_job("ttl-delayed", sink.script("/ttl-delayed"))
    due = ts_in(hours=1)
    run = await api.trigger(job, scheduled_time=due, ttl={"seconds": 60})
    assert run.expire_time.ToDatetime(tzinfo=UTC) == due.ToDatetime(tzinfo=UTC) + timedelta(seconds=60)
