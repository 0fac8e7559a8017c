"""What a workflow step sets on its job run (retry strategy and delays, timeout, schedule_to_start_timeout),
and the options of TriggerWorkflow (scheduled_time, step_overrides), end to end: real server, database,
engine loop and HTTP endpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    SkipReason,
    StepRunStatus,
    TriggeredWorkflowRun,
    WorkflowRunStatus,
)
from strait_client.v1 import job_pb2, run_pb2, workflow_pb2, workflow_run_pb2
from strait_server import db
from strait_server.app import App
from strait_server.config import Settings
from strait_server.dispatch.http import Attempt, outcome_of
from strait_server.model import JobSpec, NewRun, RetryStrategy
from strait_server.queue import Queue
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.runs import RunStore
from tests.conftest import Api, AppFactory, connect, eventually
from tests.integration.test_api_contract import violations
from tests.integration.test_client import address
from tests.integration.test_workflow_runs import Flows, bodies, step
from tests.sink import Reply, Sink
from tests.support import FakeClock

W = workflow_pb2
R = workflow_run_pb2
HOUR = timedelta(hours=1)


def span(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def ms(n: int) -> Duration:
    return span(timedelta(milliseconds=n))


def stamp(at: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(at)
    return out


def job_retries(strategy: int, delay: timedelta) -> job_pb2.RetryPolicy:
    """A job's retry policy with one delay for the first retry and at most."""
    return job_pb2.RetryPolicy(strategy=strategy, initial_delay=span(delay), max_delay=span(delay))


@pytest.fixture
def flows(api: Api, sink: Sink) -> Flows:
    return Flows(api, sink)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


# Retry policy and timeout: the step's, on its job run.

async def test_a_step_retries_its_job_run_with_its_own_delays_not_the_jobs(flows: Flows, sink: Sink,
                                                                           pool: asyncpg.Pool) -> None:
    # The job retries once, an hour later, with an attempt of up to 5 minutes: a step run retried that way
    # would not finish within the test.
    await flows.job("flaky", Reply(status=503), Reply(status=503), then=Reply(body='{"ok": 1}'), max_attempts=1,
                    retry_policy=job_retries(job_pb2.RETRY_STRATEGY_FIXED, HOUR))
    await flows.create(step("call", "flaky", timeout=span(timedelta(seconds=7)),
                            retry_policy=W.StepRetryPolicy(max_attempts=3,
                                                           strategy=job_pb2.RETRY_STRATEGY_EXPONENTIAL,
                                                           initial_delay=ms(300), max_delay=ms(400))))
    run = await flows.trigger()
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
    calls = sink.for_path("/flaky")
    assert len(calls) == 3
    # Exponential from 300 ms, capped at 400 ms, each within the jitter of +-20% (plus dispatch latency).
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] >= 0.3 * 0.8 and gaps[1] >= 0.4 * 0.8, gaps
    assert all(gap < 10 for gap in gaps), gaps
    steps = await flows.steps(run.id)
    job_run = await flows.api.get_run(steps["call"].job_run_id)
    assert job_run.max_attempts == 3 and [a.status_code for a in job_run.attempts] == [503, 503, 200]
    assert job_run.timeout.ToTimedelta() == timedelta(seconds=7)  # the step's, not the job's 5 minutes
    # The job run carries the step's retry policy; the job is left as it was.
    stored = await pool.fetchrow("SELECT retry_strategy, retry_initial_ms, retry_max_ms FROM runs WHERE id = $1",
                                 job_run.id)
    assert tuple(stored) == ("exponential", 300, 400)
    job = await flows.api.jobs.GetJob(job_pb2.GetJobRequest(slug="flaky"), metadata=flows.api.metadata)
    assert job.job.retry_policy.initial_delay.ToTimedelta() == HOUR


async def test_unset_fields_of_a_steps_retry_policy_take_the_jobs(flows: Flows, sink: Sink,
                                                                  pool: asyncpg.Pool) -> None:
    await flows.job("flaky", Reply(status=503), then=Reply(), max_attempts=2,
                    retry_policy=job_retries(job_pb2.RETRY_STRATEGY_FIXED, timedelta(milliseconds=200)))
    await flows.create(step("call", "flaky", retry_policy=W.StepRetryPolicy(max_attempts=2)))
    done = await flows.wait((await flows.trigger()).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
    steps = await flows.steps(done.id)
    stored = await pool.fetchrow("SELECT retry_strategy, retry_initial_ms, retry_max_ms FROM runs WHERE id = $1",
                                 steps["call"].job_run_id)
    assert tuple(stored) == (None, None, None)


async def test_claim_and_recovery_use_the_runs_retry_policy_before_the_jobs(pool: asyncpg.Pool) -> None:
    """The two places a retry delay is computed: the settle (from what the claim returns) and the recovery
    sweep (in SQL). A run with its own policy is delayed by it; a run without, by its job's."""
    project = await ProjectStore(pool).create("retry", "retry")
    job = await JobStore(pool).create(project.id, JobSpec(
        slug="j", name="j", endpoint_url="http://x", max_attempts=3, retry_strategy=RetryStrategy.EXPONENTIAL,
        retry_initial_ms=3_600_000, retry_max_ms=3_600_000))
    own, plain = await RunStore(pool).insert(job, [
        NewRun(retry_strategy="fixed", retry_initial_ms=5_000), NewRun()])
    queue = Queue(pool)
    claimed = {c.id: c for c in await queue.claim("disp_gone", 10)}
    mine, theirs = claimed[own.run.id], claimed[plain.run.id]
    assert (mine.retry_strategy, mine.retry_initial_ms, mine.retry_max_ms) == ("fixed", 5_000, 3_600_000)
    assert (theirs.retry_strategy, theirs.retry_initial_ms) == ("exponential", 3_600_000)
    failed = Attempt(503, "endpoint returned 503", "server", None, "http://x")
    assert 4_000 <= outcome_of(mine, failed, datetime.now(UTC), 1.0).delay_ms <= 6_000
    assert outcome_of(theirs, failed, datetime.now(UTC), 1.0).delay_ms >= 0.8 * 3_600_000
    # Their dispatcher never had a heartbeat row: recovery takes them back, and with no free losses allowed
    # (max_lost 0) the loss counts as an attempt, retried after the delay.
    assert sorted(await queue.recover(timedelta(seconds=2), timedelta(seconds=30), 0)) == sorted(claimed)
    delays = {r["id"]: r["delay"] for r in await pool.fetch(
        "SELECT id, extract(epoch FROM run_at - update_time) * 1000 AS delay FROM runs WHERE status = 'queued'")}
    assert 4_000 <= delays[own.run.id] <= 6_000
    assert delays[plain.run.id] >= 0.8 * 3_600_000


# schedule_to_start_timeout: the job run's TTL until its first start.

async def test_a_step_whose_job_run_does_not_start_in_time_fails_and_its_policy_applies(
        flows: Flows, sink: Sink) -> None:
    await flows.job("closed")
    await flows.job("fallback")
    await flows.create(step("call", "closed", schedule_to_start_timeout=span(timedelta(seconds=1)),
                            on_failure=W.ON_FAILURE_CONTINUE),
                       step("fallback", "fallback", "call", trigger_rule=W.TRIGGER_RULE_ONE_FAILED))
    # A disabled job's runs wait in the queue, never claimed, until it is enabled again.
    job = await flows.api.jobs.GetJob(job_pb2.GetJobRequest(slug="closed"), metadata=flows.api.metadata)
    await flows.api.jobs.UpdateJob(job_pb2.UpdateJobRequest(job=job_pb2.Job(id=job.job.id, enabled=False),
                                                            update_mask=FieldMask(paths=["enabled"])),
                                   metadata=flows.api.metadata)
    run = await flows.trigger()
    call = await flows.wait_step(run.id, "call", R.STEP_RUN_STATUS_RUNNING)
    job_run = await flows.api.get_run(call.job_run_id)
    assert job_run.status == run_pb2.RUN_STATUS_QUEUED and job_run.HasField("expire_time")
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_FAILED  # a CONTINUE failure still fails the run at the end
    steps = await flows.steps(run.id)
    assert steps["call"].status == R.STEP_RUN_STATUS_FAILED
    assert steps["call"].error == "not_started: its job run was not started within 1s"
    assert (await flows.api.get_run(call.job_run_id)).status == run_pb2.RUN_STATUS_EXPIRED
    assert steps["fallback"].status == R.STEP_RUN_STATUS_COMPLETED and len(sink.for_path("/fallback")) == 1
    assert sink.for_path("/closed") == []


async def test_once_started_a_steps_job_run_no_longer_expires_while_it_waits_to_retry(
        flows: Flows, sink: Sink) -> None:
    """The timeout bounds the wait for the first start only: a retry due after it is still made."""
    await flows.job("flaky", Reply(status=503), then=Reply(body='{"ok": 2}'))
    await flows.create(step("call", "flaky", schedule_to_start_timeout=span(timedelta(seconds=1)),
                            retry_policy=W.StepRetryPolicy(max_attempts=2, strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                                           initial_delay=ms(2_500))))
    run = await flows.trigger()
    await sink.wait_for(1, "/flaky")
    call = await flows.wait_step(run.id, "call", R.STEP_RUN_STATUS_RUNNING)

    async def waiting_to_retry() -> run_pb2.Run | None:
        job_run = await flows.api.get_run(call.job_run_id)
        return job_run if job_run.status == run_pb2.RUN_STATUS_QUEUED and job_run.attempt == 1 else None
    job_run = await eventually(waiting_to_retry)
    assert not job_run.HasField("expire_time")
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
    assert len(sink.for_path("/flaky")) == 2


# scheduled_time: the run is created at once and starts at its time (the engine's clock is the test's).

async def scheduled_flows(make_app: AppFactory, settings: Settings, sink: Sink) -> tuple[App, Flows, FakeClock]:
    clock = FakeClock()
    app = await make_app(clock=clock)
    return app, Flows(await connect(app, settings.admin_key), sink), clock


async def engine_pass(app: App) -> None:
    assert app.workflow_progress is not None
    await app.workflow_progress.run_pass()


async def run_of(flows: Flows, run_id: str) -> R.WorkflowRun:
    return (await flows.runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run_id),
                                            metadata=flows.api.metadata)).workflow_run


async def test_a_scheduled_run_is_visible_at_once_and_starts_at_its_time_not_before(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app, flows, clock = await scheduled_flows(make_app, settings, sink)
    await flows.job("first")
    await flows.job("second")
    await flows.create(step("first", "first"), step("second", "second", "first"))
    at = datetime.now(UTC).replace(microsecond=0) + HOUR
    run = await flows.trigger(run_input={"n": 1}, scheduled_time=stamp(at))
    assert run.status == R.WORKFLOW_RUN_STATUS_SCHEDULED
    assert run.scheduled_time.ToDatetime(UTC) == at and not run.HasField("start_time")
    assert await flows.steps(run.id) == {}
    # Passes of the engine before its time start nothing (the loop runs them too, on the same clock).
    await engine_pass(app)
    await engine_pass(app)
    assert (await run_of(flows, run.id)).status == R.WORKFLOW_RUN_STATUS_SCHEDULED
    assert sink.received == []
    [created] = await flows.events(run.id)
    assert (created.type, created.from_status, created.to_status) == ("run_status", "", "scheduled")
    assert created.message == f"starts at {at.isoformat()}"
    # Its time comes: the timer pass starts it.
    clock.now = at + timedelta(seconds=1)
    await engine_pass(app)
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED and done.HasField("start_time")
    assert bodies(sink, "/first") == [{"n": 1}] and len(sink.for_path("/second")) == 1
    events = await flows.events(run.id)
    assert [(e.from_status, e.to_status) for e in events if e.type == "run_status"] == [
        ("", "scheduled"), ("scheduled", "running"), ("running", "completed")]


async def test_a_scheduled_time_already_past_starts_the_run_at_once(flows: Flows, sink: Sink) -> None:
    await flows.job("first")
    await flows.create(step("first", "first"))
    run = await flows.trigger(scheduled_time=stamp(datetime.now(UTC) - timedelta(minutes=5)))
    assert run.status == R.WORKFLOW_RUN_STATUS_RUNNING and not run.HasField("scheduled_time")
    assert (await flows.wait(run.id)).status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert len(sink.for_path("/first")) == 1


async def test_a_scheduled_run_canceled_before_its_time_never_starts(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app, flows, clock = await scheduled_flows(make_app, settings, sink)
    await flows.job("first")
    await flows.create(step("first", "first"))
    run = await flows.trigger(scheduled_time=stamp(datetime.now(UTC) + HOUR))
    reply = await flows.runs.CancelWorkflowRun(R.CancelWorkflowRunRequest(id=run.id, reason="not needed"),
                                               metadata=flows.api.metadata)
    assert reply.workflow_run.status == R.WORKFLOW_RUN_STATUS_CANCELED and reply.workflow_run.error == "not needed"
    clock.now = datetime.now(UTC) + 2 * HOUR
    await engine_pass(app)
    assert (await run_of(flows, run.id)).status == R.WORKFLOW_RUN_STATUS_CANCELED
    assert await flows.steps(run.id) == {} and sink.received == []
    assert [(e.from_status, e.to_status) for e in await flows.events(run.id)] == [
        ("", "scheduled"), ("scheduled", "canceled")]


async def test_a_scheduled_run_takes_its_concurrency_slot_when_it_starts_and_queues_from_then(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app, flows, clock = await scheduled_flows(make_app, settings, sink)
    release = {who: asyncio.Event() for who in "ac"}
    await flows.job("work", then=Reply(answer=lambda r: json.dumps(r.json())))
    sink.script("/work", Reply(block=release["a"]), Reply(block=release["c"]))
    await flows.defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(
        slug="one", steps=[step("work", "work")], concurrency=W.WorkflowConcurrency(max_runs=1))),
        metadata=flows.api.metadata)
    at = datetime.now(UTC) + HOUR
    b = await flows.trigger("one", {"who": "b"}, scheduled_time=stamp(at))
    # While it waits for its time, the scheduled run holds no slot: a run triggered now starts.
    a = await flows.trigger("one", {"who": "a"})
    assert (b.status, a.status) == (R.WORKFLOW_RUN_STATUS_SCHEDULED, R.WORKFLOW_RUN_STATUS_RUNNING)
    await sink.wait_for(1, "/work")
    c = await flows.trigger("one", {"who": "c"})
    assert c.status == R.WORKFLOW_RUN_STATUS_QUEUED
    # Its time comes while the slot is taken: it queues, behind the run that queued first.
    clock.now = at + timedelta(seconds=1)
    await engine_pass(app)
    assert (await run_of(flows, b.id)).status == R.WORKFLOW_RUN_STATUS_QUEUED
    release["a"].set()
    await sink.wait_for(2, "/work")
    assert [r.json()["who"] for r in sink.for_path("/work")] == ["a", "c"]
    assert (await run_of(flows, b.id)).status == R.WORKFLOW_RUN_STATUS_QUEUED
    release["c"].set()
    done = await flows.wait(b.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert [r.json()["who"] for r in sink.for_path("/work")] == ["a", "c", "b"]
    assert [(e.from_status, e.to_status) for e in await flows.events(b.id) if e.type == "run_status"] == [
        ("", "scheduled"), ("scheduled", "queued"), ("queued", "running"), ("running", "completed")]


# step_overrides: steps disabled for one run.

async def test_a_disabled_step_is_skipped_without_running_and_the_join_after_it_still_runs(
        flows: Flows, sink: Sink) -> None:
    for slug in ("root", "audit", "charge", "notify", "join"):
        await flows.job(slug)
    await flows.create(step("root", "root"), step("audit", "audit", "root"), step("charge", "charge", "root"),
                       step("notify", "notify", "audit"), step("join", "join", "audit", "charge"))
    run = await flows.trigger(step_overrides=[W.StepOverride(ref="audit"),
                                              W.StepOverride(ref="charge", enabled=True)])
    done = await flows.wait(run.id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
    steps = await flows.steps(run.id)
    assert (steps["audit"].status, steps["audit"].skip_reason) == (R.STEP_RUN_STATUS_SKIPPED,
                                                                   R.SKIP_REASON_DISABLED)
    assert not steps["audit"].job_run_id and sink.for_path("/audit") == []
    # Only parent skipped: skipped too; a parent completed beside it: runs (ALL_SUCCESS).
    assert steps["notify"].skip_reason == R.SKIP_REASON_ALL_UPSTREAM_SKIPPED
    assert steps["charge"].status == steps["join"].status == R.STEP_RUN_STATUS_COMPLETED
    [join_input] = bodies(sink, "/join")
    assert join_input["parent_outputs"] == {"audit": None, "charge": {"ok": True}}
    decisions = [(e.step_ref, e.message) for e in await flows.events(run.id) if e.type == "step_decision"]
    assert ("audit", "skipped: disabled for this run by the trigger") in decisions
    # The override is for that run only.
    other = await flows.wait((await flows.trigger()).id)
    assert {s.status for s in (await flows.steps(other.id)).values()} == {R.STEP_RUN_STATUS_COMPLETED}


async def test_a_disabled_root_cascades_by_trigger_rules(flows: Flows, sink: Sink) -> None:
    await flows.job("root")
    await flows.job("cleanup")
    await flows.create(step("root", "root"),
                       step("cleanup", "cleanup", "root", trigger_rule=W.TRIGGER_RULE_NONE_FAILED))
    done = await flows.wait((await flows.trigger(step_overrides=[W.StepOverride(ref="root")])).id)
    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    steps = await flows.steps(done.id)
    assert steps["root"].skip_reason == R.SKIP_REASON_DISABLED
    assert steps["cleanup"].status == R.STEP_RUN_STATUS_COMPLETED  # NONE_FAILED runs after skipped parents
    assert sink.for_path("/root") == []


# Bad input: INVALID_ARGUMENT with field paths, nothing stored.

async def test_bad_trigger_options_are_refused_with_field_paths_and_nothing_is_stored(
        flows: Flows, sink: Sink) -> None:
    await flows.job("root")
    await flows.create(step("root", "root"), step("next", "root", "root"))
    too_far = datetime.now(UTC) + timedelta(days=31)
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"step_overrides": [W.StepOverride(ref="next"), W.StepOverride(ref="nope")]},
         {"step_overrides[1].ref": "'nope' is not a step of this workflow version"}),
        ({"step_overrides": [W.StepOverride(ref="root"), W.StepOverride(ref=""), W.StepOverride(ref="root")]},
         {"step_overrides[1].ref": "is required",
          "step_overrides[2].ref": "names step 'root' again (step_overrides[0])"}),
        ({"scheduled_time": stamp(too_far)}, {"scheduled_time": "must be at most 30 days ahead"}),
        ({"scheduled_time": Timestamp(seconds=10**12)}, {"scheduled_time": "is not a valid timestamp"}),
        ({"scheduled_time": stamp(too_far), "step_overrides": [W.StepOverride(ref="gone")]},
         {"scheduled_time": "must be at most 30 days ahead"}),
    ]
    for fields, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await flows.trigger(**fields)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(err.value) == expected, fields
    listed = await flows.runs.ListWorkflowRuns(R.ListWorkflowRunsRequest(), metadata=flows.api.metadata)
    assert list(listed.workflow_runs) == [] and sink.received == []
    # A step's retry policy whose max_delay is below its initial_delay is refused when the definition is written.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flows.create(step("root", "root", retry_policy=W.StepRetryPolicy(initial_delay=ms(500),
                                                                              max_delay=ms(100))), slug="bad")
    assert violations(err.value) == {"workflow.steps[0].retry_policy.max_delay":
                                     "must not be shorter than initial_delay"}


# The Python client.

async def test_the_clients_trigger_options(make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app, flows, clock = await scheduled_flows(make_app, settings, sink)
    await flows.job("root")
    await flows.job("extra")
    await flows.create(step("root", "root"), step("extra", "extra", "root"))
    at = datetime.now(UTC).replace(microsecond=0) + HOUR
    async with AsyncClient(address(app), flows.api.key) as client:
        run = await client.workflows.trigger("flow", {"n": 2}, scheduled_time=at, step_overrides={"extra": False})
        assert run.status is WorkflowRunStatus.SCHEDULED and run.scheduled_time == at and not run.is_terminal
        with pytest.raises(InvalidArgumentError) as refused:
            await client.workflows.trigger("flow", step_overrides={"nope": False})
        assert [field for field, _ in refused.value.field_violations] == ["step_overrides[0].ref"]
        with pytest.raises(ValueError):
            await client.workflows.trigger("flow", scheduled_time=datetime.now() + HOUR)  # naive: refused
        clock.now = at + timedelta(seconds=1)
        await engine_pass(app)
        done = await client.workflow_runs.wait(run.id, timeout=20)
        by_ref = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}
        assert (by_ref["extra"].status, by_ref["extra"].skip_reason) == (StepRunStatus.SKIPPED, SkipReason.DISABLED)
        assert done.status is WorkflowRunStatus.COMPLETED

    def blocking() -> TriggeredWorkflowRun:
        with Client(address(app), flows.api.key, timeout=10) as sync:
            return sync.workflows.trigger("flow", scheduled_time=datetime.now(UTC) - HOUR,
                                          step_overrides={"root": True, "extra": False})
    started = await asyncio.to_thread(blocking)
    assert started.status is WorkflowRunStatus.RUNNING and started.scheduled_time is None
    await sink.wait_for(2, "/root")
