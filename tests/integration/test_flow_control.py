"""Flow control at dispatch: concurrency limits, rate limits, execution windows, poison pills."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import Role
from strait_server.config import Settings
from strait_server.service import job_updates
from tests.conftest import Api, AppFactory, connect, eventually
from tests.processes import serve_subprocess
from tests.sink import Received, Reply, Sink
from tests.support import FAST_RETRY, ts_in

S = run_pb2


def _key(r: Received) -> str:
    return str(r.json()["k"])


async def _all_completed(api: Api, job: job_pb2.Job, count: int, timeout: float = 60) -> None:
    async def done() -> bool:
        resp = await api.runs.ListRuns(run_pb2.ListRunsRequest(
            job_id=job.id, statuses=[S.RUN_STATUS_COMPLETED], page_size=1000), metadata=api.metadata)
        return len(resp.runs) == count
    await eventually(done, timeout=timeout, interval=0.1)


async def _batch(api: Api, job: job_pb2.Job, options: list[job_pb2.RunOptions]) -> list[run_pb2.Run]:
    resp = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=options),
                                          metadata=api.metadata)
    return list(resp.runs)


async def test_concurrency_limits_hold_across_two_dispatcher_processes(settings: Settings, sink: Sink) -> None:
    url = sink.script("/limited", then=Reply(delay=0.15))
    keyed_url = sink.script("/keyed", then=Reply(delay=0.15))
    async with serve_subprocess(settings) as (_, port_a), serve_subprocess(settings) as (_, port_b):
        api = await connect(port_a, settings.admin_key)
        job = await api.create_job("limited", url, max_concurrency=3)
        keyed = await api.create_job("keyed", keyed_url, max_concurrency_per_key=2)
        other = await connect(port_b, settings.admin_key, job.project_id)
        # Both processes take triggers and both dispatch; the limits hold for them together.
        await _batch(api, job, [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(12)])
        await _batch(other, job, [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(12)])
        await _batch(other, keyed, [job_pb2.RunOptions(payload_json=json.dumps({"k": k}), concurrency_key=k)
                                    for k in ("a", "b", "c") * 6])
        await _all_completed(api, job, 24)
        await _all_completed(api, keyed, 18)
        assert sink.peak_concurrency("/limited") == {"": 3}
        assert sink.peak_concurrency("/keyed", _key) == {"a": 2, "b": 2, "c": 2}
        # Different keys do run side by side.
        assert sink.peak_concurrency("/keyed") == {"": 6}
        await api.channel.close()
        await other.channel.close()


async def test_a_held_run_says_why_and_starts_when_a_slot_frees(make_app: AppFactory, settings: Settings,
                                                                sink: Sink) -> None:
    app = await make_app()
    api = await connect(app, settings.admin_key)
    release = asyncio.Event()
    url = sink.script("/one", Reply(block=release))
    job = await api.create_job("one-at-a-time", url, max_concurrency=1)
    first = await api.trigger(job)
    await sink.wait_for(1, "/one")
    second = await api.trigger(job)

    async def held() -> run_pb2.Run | None:
        run = await api.get_run(second.id)
        return run if run.wait_reason else None
    waiting = await eventually(held)
    assert waiting.status == S.RUN_STATUS_QUEUED
    assert waiting.wait_reason == "concurrency limit: 1 runs of this job executing (max_concurrency)"
    events = await api.events(second.id)
    assert [e.message for e in events if e.type == "waiting"] == [waiting.wait_reason]
    assert len(sink.for_path("/one")) == 1

    release.set()
    await api.wait_status(first.id, S.RUN_STATUS_COMPLETED)
    started = await api.wait_status(second.id, S.RUN_STATUS_COMPLETED)
    assert started.wait_reason == ""
    await api.channel.close()


async def test_adding_a_limit_applies_to_runs_already_queued(make_app: AppFactory, settings: Settings,
                                                             sink: Sink) -> None:
    front = await make_app(frozenset({Role.API, Role.SCHEDULER}))
    api = await connect(front, settings.admin_key)
    url = sink.script("/later", then=Reply(delay=0.1))
    job = await api.create_job("later", url)
    await _batch(api, job, [job_pb2.RunOptions() for _ in range(8)])
    # Queued with no limit; the limit set before any dispatcher runs governs them.
    job.max_concurrency = 2
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job, update_mask=field_mask_pb2.FieldMask(paths=["max_concurrency"])), metadata=api.metadata)
    await make_app(frozenset({Role.WORKER}))
    await _all_completed(api, job, 8)
    assert sink.peak_concurrency("/later") == {"": 2}
    await api.channel.close()


async def test_rate_limit_spaces_starts_across_two_processes(settings: Settings, sink: Sink) -> None:
    url = sink.script("/rated")
    async with serve_subprocess(settings) as (_, port_a), serve_subprocess(settings) as (_, port_b):
        api = await connect(port_a, settings.admin_key)
        job = await api.create_job("rated", url, rate_limit_max=3, rate_limit_window={"seconds": 1})
        other = await connect(port_b, settings.admin_key, job.project_id)
        runs = await _batch(api, job, [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(5)])
        runs += await _batch(other, job, [job_pb2.RunOptions(payload_json=json.dumps({"i": i})) for i in range(4)])

        async def someone_waits() -> bool:
            for r in runs:
                got = await api.get_run(r.id)
                if got.wait_reason.startswith("rate limit: 3 starts per 1s reached"):
                    return True
            return False
        await eventually(someone_waits)
        await _all_completed(api, job, 9, timeout=30)
        starts = sorted(r.at for r in sink.for_path("/rated"))
        # Fixed windows of 1 s: starts 1-3 in the first, 4-6 in the second, 7-9 in the third.
        assert starts[3] - starts[0] >= 0.9 and starts[6] - starts[3] >= 0.9
        assert starts[2] - starts[0] < 0.9
        await api.channel.close()
        await other.channel.close()


async def test_runs_outside_the_execution_window_wait_delayed_until_it_opens(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(sweep_interval=timedelta(milliseconds=100))
    api = await connect(app, settings.admin_key)
    url = sink.script("/windowed")
    now = datetime.now(UTC)
    closed_minute = (now + timedelta(minutes=5)).minute  # a window that is certainly closed now
    job = await api.create_job("windowed", url, execution_window_cron=f"{closed_minute} * * * *")
    run = await api.trigger(job)
    delayed = await api.wait_status(run.id, S.RUN_STATUS_DELAYED)
    opens = delayed.scheduled_time.ToDatetime(tzinfo=UTC)
    assert opens.minute == closed_minute and opens.second == 0 and opens > now
    assert delayed.wait_reason == (f"outside the execution window '{closed_minute} * * * *' (UTC); "
                                   f"opens at {opens.isoformat()}")
    events = await api.events(run.id)
    assert (events[-1].from_status, events[-1].to_status) == (S.RUN_STATUS_QUEUED, S.RUN_STATUS_DELAYED)
    assert sink.for_path("/windowed") == []

    # Opening the window (every minute matches) releases the waiting run at once.
    job.execution_window_cron = "* * * * *"
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job, update_mask=field_mask_pb2.FieldMask(paths=["execution_window_cron"])), metadata=api.metadata)
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert done.wait_reason == ""
    await api.channel.close()


async def test_identical_failures_in_a_row_dead_letter_early(make_app: AppFactory, settings: Settings,
                                                             sink: Sink) -> None:
    app = await make_app()
    api = await connect(app, settings.admin_key)
    same = sink.script("/same", then=Reply(500, '{"error": "db down"}'))
    job = await api.create_job("poisoned", same, max_attempts=10, poison_pill_threshold=3, retry_policy=FAST_RETRY)
    run = await api.trigger(job)
    dead = await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)
    assert dead.attempt == 3 and len(sink.for_path("/same")) == 3
    assert dead.error == "poison pill detected (same error 3 times in a row): endpoint returned 500"

    # Different failures in between do not count as a streak.
    varied = sink.script("/varied", Reply(500), Reply(503), Reply(500), Reply(503), then=Reply(200))
    other = await api.create_job("varied", varied, max_attempts=10, poison_pill_threshold=2, retry_policy=FAST_RETRY)
    survivor = await api.trigger(other)
    finished = await api.wait_status(survivor.id, S.RUN_STATUS_COMPLETED)
    assert finished.attempt == 5
    await api.channel.close()


@pytest.mark.parametrize(("fields", "violation"), [
    ({"execution_window_cron": "9-17 * * 1-5"}, "job.execution_window_cron"),
    ({"execution_window_cron": "* 25 * * *"}, "job.execution_window_cron"),
    ({"execution_window_cron": "0 0 31 2 *"}, "job.execution_window_cron"),  # valid fields, never matches
    ({"rate_limit_max": 5}, "job.rate_limit_window"),
    ({"rate_limit_window": {"seconds": 10}}, "job.rate_limit_max"),
    ({"rate_limit_max": 5, "rate_limit_window": {"nanos": 5}}, "job.rate_limit_window"),
    ({"max_concurrency": -1}, "job.max_concurrency"),
    ({"max_concurrency_per_key": -2}, "job.max_concurrency_per_key"),
    ({"poison_pill_threshold": 101}, "job.poison_pill_threshold"),
])
async def test_bad_flow_control_settings_name_the_field(api: Api, sink: Sink, fields: dict[str, object],
                                                        violation: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.create_job("bad", sink.url("/bad"), **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = status_pb2.Status.FromString(dict(err.value.trailing_metadata() or ())["grpc-status-details-bin"])
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in status.details)
    assert [f.field for f in request.field_violations] == [violation]
    listed = await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.metadata)
    assert listed.jobs == []


async def test_an_over_long_concurrency_key_is_refused(api: Api, sink: Sink) -> None:
    job = await api.create_job("keys", sink.url("/keys"), max_concurrency_per_key=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.trigger(job, concurrency_key="k" * 257)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_identical_triggers_within_the_dedup_window_return_the_first_run(api: Api, sink: Sink) -> None:
    job = await api.create_job("dedup", sink.url("/dedup"), dedup_window={"seconds": 600})
    first = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(
        payload_json='{"a": 1, "b": [1, 2]}')), metadata=api.metadata)
    assert not first.deduplicated
    # The same payload written differently is the same payload.
    again = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(
        payload_json='{"b": [1, 2],  "a": 1}')), metadata=api.metadata)
    assert again.deduplicated and not again.idempotent_repeat and again.run.id == first.run.id
    other = await api.trigger(job, payload_json='{"a": 2}')
    assert other.id != first.run.id
    # An explicit dedup key decides instead of the payload; a batch is deduplicated item by item.
    batch = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
        job_pb2.RunOptions(payload_json='{"x": 1}', dedup_key="order-7"),
        job_pb2.RunOptions(payload_json='{"x": 2}', dedup_key="order-7"),
        job_pb2.RunOptions(payload_json='{"a": 1, "b": [1, 2]}'),
    ]), metadata=api.metadata)
    assert batch.runs[0].id == batch.runs[1].id and batch.idempotent_repeats[:2] == [False, True]
    assert batch.runs[2].id == first.run.id and batch.idempotent_repeats[2]
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert len(listed.runs) == 3


async def test_concurrent_identical_triggers_create_one_run(api: Api, sink: Sink) -> None:
    job = await api.create_job("dedup-race", sink.url("/race"), dedup_window={"seconds": 60})
    responses = await asyncio.gather(*(api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(payload_json='{"same": true}')), metadata=api.metadata)
        for _ in range(20)))
    assert len({r.run.id for r in responses}) == 1
    assert sum(not r.deduplicated for r in responses) == 1


async def test_the_dedup_window_ends(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app()
    api = await connect(app, settings.admin_key)
    job = await api.create_job("short-dedup", sink.url("/short"), dedup_window={"seconds": 1})
    first = await api.trigger(job, payload_json='{"n": 1}')

    async def new_run() -> run_pb2.Run | None:
        run = await api.trigger(job, payload_json='{"n": 1}')
        return run if run.id != first.id else None
    later = await eventually(new_run, timeout=10, interval=0.2)
    created = [first.create_time.ToDatetime(), later.create_time.ToDatetime()]
    assert created[1] - created[0] >= timedelta(seconds=1)
    await api.channel.close()


async def test_debounced_triggers_collapse_into_one_run_with_the_latest_payload(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(sweep_interval=timedelta(milliseconds=50))
    api = await connect(app, settings.admin_key)
    job = await api.create_job("debounced", sink.script("/debounced"), debounce_window={"seconds": 1})
    first = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(
        payload_json='{"v": 1}')), metadata=api.metadata)
    assert first.run.status == S.RUN_STATUS_DELAYED and not first.debounced
    assert first.run.metadata["triggered_by"] == "debounce"
    replies = []
    for v in (2, 3):
        replies.append(await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(
            payload_json=json.dumps({"v": v}))), metadata=api.metadata))
    assert all(r.debounced and r.run.id == first.run.id for r in replies)
    assert replies[-1].run.payload_json == '{"v": 3}'
    # Each trigger pushed the run back by a whole window.
    assert replies[-1].run.scheduled_time.ToDatetime() > first.run.scheduled_time.ToDatetime()
    other_key = await api.trigger(job, payload_json='{"v": 9}', debounce_key="tenant-b")
    assert other_key.id != first.run.id

    done = await api.wait_status(first.run.id, S.RUN_STATUS_COMPLETED)
    assert done.payload_json == '{"v": 3}'
    bodies = [r.json() for r in await sink.wait_for(2, "/debounced")]
    assert sorted(b["v"] for b in bodies) == [3, 9]
    events = await api.events(first.run.id)
    assert [e.type for e in events].count("debounced") == 2
    # Once the run has left the window, the next trigger starts a new one.
    after = await api.trigger(job, payload_json='{"v": 4}')
    assert after.id not in (first.run.id, other_key.id) and after.status == S.RUN_STATUS_DELAYED
    await api.channel.close()


async def test_debounce_settings_are_checked(api: Api, sink: Sink) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.create_job("both", sink.url("/both"), debounce_window={"seconds": 5},
                             dedup_window={"seconds": 5})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "job.debounce_window" in err.value.details()
    job = await api.create_job("deb", sink.url("/deb"), debounce_window={"seconds": 5})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.trigger(job, idempotency_key="k1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(job_id=job.id), metadata=api.metadata)
    assert listed.runs == []


async def test_gates_of_a_disabled_job_do_not_starve_other_jobs(make_app: AppFactory, settings: Settings,
                                                                sink: Sink) -> None:
    # A small claim batch: each gated claim visits 16 gates, fewer than the disabled job holds.
    app = await make_app(claim_batch_size=4)
    api = await connect(app, settings.admin_key)
    paused = await api.create_job("paused", sink.url("/paused"), max_concurrency_per_key=1)
    # Due in a moment, by when the job is disabled: 30 gated runs wait under 30 gates of a disabled job.
    held = await _batch(api, paused, [job_pb2.RunOptions(concurrency_key=f"k{i:02d}", scheduled_time=ts_in(seconds=2))
                                      for i in range(30)])
    paused.enabled = False
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=paused, update_mask=field_mask_pb2.FieldMask(
        paths=["enabled"])), metadata=api.metadata)
    await api.wait_status(held[-1].id, S.RUN_STATUS_QUEUED)
    later = await api.create_job("later", sink.url("/later"), max_concurrency_per_key=1)
    run = await api.trigger(later, concurrency_key="a")
    await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert sink.for_path("/paused") == []
    await api.channel.close()


async def test_a_run_queued_ungated_as_a_limit_is_added_is_gated_soon_after(
        make_app: AppFactory, settings: Settings, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_updates, "REGATE_AGAIN_AFTER_S", 0.2)
    front = await make_app(frozenset({Role.API, Role.SCHEDULER}))  # no dispatcher: the run stays queued
    api = await connect(front, settings.admin_key)
    job = await api.create_job("raced", sink.script("/raced"))
    [run] = await _batch(api, job, [job_pb2.RunOptions()])
    job.max_concurrency = 1
    await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job, update_mask=field_mask_pb2.FieldMask(paths=["max_concurrency"])), metadata=api.metadata)
    conn = await asyncpg.connect(settings.database_url)
    try:
        # What a trigger that read the job just before the update committed leaves behind: the run queued
        # without a gate, where the plain claim would start it past the new limit.
        await conn.execute("UPDATE run_queue SET gate = NULL WHERE run_id = $1", run.id)

        async def gated() -> bool:
            return bool(await conn.fetchval(
                "SELECT gate IS NOT NULL AND gate = strait_run_gate(run_id) FROM run_queue WHERE run_id = $1",
                run.id))
        await eventually(gated, timeout=10, interval=0.05)
    finally:
        await conn.close()
    await api.channel.close()


async def test_a_freed_slot_starts_the_next_run_at_once_not_at_the_next_poll(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    """A claim that took exactly what the limit allowed used to say nothing was held back, so a run ending did
    not bring the dispatcher back: the job drained one batch per poll interval."""
    app = await make_app(poll_interval=timedelta(seconds=30))  # a poll would come far too late for this test
    api = await connect(app, settings.admin_key)
    url = sink.script("/slots", then=Reply(delay=0.05))
    job = await api.create_job("slots", url, max_concurrency=5)
    await _batch(api, job, [job_pb2.RunOptions() for _ in range(40)])
    await _all_completed(api, job, 40, timeout=15)  # 8 rounds of 50 ms, each started as the last one ends
    assert sink.peak_concurrency("/slots") == {"": 5}
    await api.channel.close()
