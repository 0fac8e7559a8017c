"""What a workflow step sets on its job run (retry strategy and delays, timeout, schedule_to_start_timeout),
and the options of TriggerWorkflow (scheduled_time, step_overrides), end to end: real server, database,
engine loop and HTTP endpoints."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from strait_client.v1 import job_pb2, run_pb2, workflow_pb2, workflow_run_pb2
from strait_server import db
from strait_server.dispatch.http import Attempt, outcome_of
from strait_server.model import JobSpec, NewRun, RetryStrategy
from strait_server.queue import Queue
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.runs import RunStore
from tests.conftest import Api, eventually
from tests.integration.test_workflow_runs import Flows, step
from tests.sink import Reply, Sink

W = workflow_pb2
R = workflow_run_pb2
HOUR = timedelta(hours=1)


def span(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def ms(n: int) -> Duration:
    return span(timedelta(milliseconds=n))


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
