"""Flow control on worker jobs: concurrency limits (per job and per key), rate limits and execution windows hold
for runs that workers execute, across server processes, on top of the workers' own slots; a run held by a
limit says why, one held only by busy workers does not."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2

from strait_client.v1 import job_pb2, run_pb2
from strait_client.worker import TaskContext, Worker
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.integration.test_client import address
from tests.integration.test_workers import _statuses, serving, worker_job
from tests.sink import Sink

S = run_pb2


class Tracker:
    """What the handlers are running, by concurrency key, and the most that ever ran at once."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        self.starts: list[float] = []
        self.release = asyncio.Event()

    async def hold(self, key: str) -> None:
        self.starts.append(time.monotonic())
        self.running[key] += 1
        self.peak[key] = max(self.peak[key], self.running[key])
        self.peak_total = max(self.peak_total, sum(self.running.values()))
        try:
            await self.release.wait()
        finally:
            self.running[key] -= 1


def tracked(worker: Worker, slug: str, tracker: Tracker) -> None:
    @worker.handler(slug)
    async def handle(ctx: TaskContext, payload: Any) -> None:
        await tracker.hold(payload.get("k", "") if isinstance(payload, dict) else "")


async def trigger(api: Api, job: job_pb2.Job, count: int, key: str = "") -> list[run_pb2.Run]:
    resp = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
        job_pb2.RunOptions(payload_json=f'{{"k": "{key}"}}', concurrency_key=key) for _ in range(count)]),
        metadata=api.metadata)
    return list(resp.runs)


async def all_completed(api: Api, runs: list[run_pb2.Run]) -> None:
    for run in runs:
        await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, timeout=30)


async def update(api: Api, job: job_pb2.Job, **fields: Any) -> job_pb2.Job:
    for name, value in fields.items():
        setattr(job, name, value)
    reply = await api.jobs.UpdateJob(job_pb2.UpdateJobRequest(
        job=job, update_mask=field_mask_pb2.FieldMask(paths=list(fields))), metadata=api.metadata)
    updated: job_pb2.Job = reply.job
    return updated


async def test_a_concurrency_limit_holds_across_two_servers_and_their_workers(
        app: App, api: Api, make_app: AppFactory, settings: Settings) -> None:
    job = await worker_job(api, "limited", max_concurrency=2)
    other_app = await make_app()
    tracker = Tracker()
    here, there = Worker(address(app), api.key, slots=5), Worker(address(other_app), api.key, slots=5)
    tracked(here, "limited", tracker)
    tracked(there, "limited", tracker)
    runs = await trigger(api, job, 8)
    async with serving(here), serving(there):
        await eventually(lambda: _counted(api, runs, {S.RUN_STATUS_EXECUTING: 2, S.RUN_STATUS_QUEUED: 6}))
        # Ten free slots between the two workers, and still two runs at a time: the limit holds for both, and
        # the runs it holds say so.
        async def told_why() -> set[str] | None:
            queued = [r for r in [await api.get_run(r.id) for r in runs] if r.status == S.RUN_STATUS_QUEUED]
            return {r.wait_reason for r in queued} if all(r.wait_reason for r in queued) else None
        assert await eventually(told_why) == {"concurrency limit: 2 runs of this job executing (max_concurrency)"}
        assert await _counted(api, runs, {S.RUN_STATUS_EXECUTING: 2, S.RUN_STATUS_QUEUED: 6})
        await eventually(lambda: _running(tracker, 2))
        tracker.release.set()
        await all_completed(api, runs)
    assert tracker.peak_total == 2 and len(tracker.starts) == 8


async def test_runs_with_different_keys_run_side_by_side_and_one_key_waits_its_turn(app: App, api: Api) -> None:
    job = await worker_job(api, "keyed", max_concurrency_per_key=1)
    tracker = Tracker()
    worker = Worker(address(app), api.key, slots=10)
    tracked(worker, "keyed", tracker)
    runs = [run for key in ("a", "b", "c") for run in await trigger(api, job, 3, key)]
    async with serving(worker):
        async def three_keys() -> bool:
            return +tracker.running == Counter({"a": 1, "b": 1, "c": 1})
        await eventually(three_keys)
        assert await _counted(api, runs, {S.RUN_STATUS_EXECUTING: 3, S.RUN_STATUS_QUEUED: 6})
        async def told_why() -> bool:
            waiting = [r for r in [await api.get_run(r.id) for r in runs] if r.status == S.RUN_STATUS_QUEUED]
            return {r.wait_reason for r in waiting} == {
                f"concurrency limit: 1 runs with concurrency key '{key}' executing" for key in "abc"}
        await eventually(told_why)
        tracker.release.set()
        await all_completed(api, runs)
    assert tracker.peak == Counter({"a": 1, "b": 1, "c": 1}) and tracker.peak_total == 3


async def test_a_limit_added_to_queued_runs_applies_when_workers_connect(app: App, api: Api) -> None:
    job = await worker_job(api, "later")
    runs = await trigger(api, job, 6)
    # Queued with no limit and no worker; the limit set now governs them.
    job = await update(api, job, max_concurrency=1)
    tracker = Tracker()
    worker = Worker(address(app), api.key, slots=6)
    tracked(worker, "later", tracker)
    async with serving(worker):
        await eventually(lambda: _counted(api, runs, {S.RUN_STATUS_EXECUTING: 1, S.RUN_STATUS_QUEUED: 5}))
        # Lifting it lets the rest start, within the worker's slots.
        await update(api, job, max_concurrency=0)
        await eventually(lambda: _counted(api, runs, {S.RUN_STATUS_EXECUTING: 6}))
        await eventually(lambda: _running(tracker, 6))
        tracker.release.set()
        await all_completed(api, runs)
    assert tracker.peak_total == 6


async def test_runs_held_only_by_busy_workers_do_not_claim_a_limit(app: App, api: Api) -> None:
    job = await worker_job(api, "roomy", max_concurrency=10)
    tracker = Tracker()
    worker = Worker(address(app), api.key, slots=2)
    tracked(worker, "roomy", tracker)
    runs = await trigger(api, job, 5)
    async with serving(worker):
        await eventually(lambda: _counted(api, runs, {S.RUN_STATUS_EXECUTING: 2, S.RUN_STATUS_QUEUED: 3}))
        waiting = [r for r in [await api.get_run(r.id) for r in runs] if r.status == S.RUN_STATUS_QUEUED]
        assert [r.wait_reason for r in waiting] == ["", "", ""]
        await eventually(lambda: _running(tracker, 2))
        tracker.release.set()
        await all_completed(api, runs)
    assert tracker.peak_total == 2


async def test_a_rate_limit_spaces_the_starts_of_worker_runs(app: App, api: Api) -> None:
    job = await worker_job(api, "rated", rate_limit_max=2, rate_limit_window={"seconds": 1})
    tracker = Tracker()
    tracker.release.set()
    worker = Worker(address(app), api.key, slots=10)
    tracked(worker, "rated", tracker)
    runs = await trigger(api, job, 5)
    async with serving(worker):
        async def someone_waits() -> bool:
            reasons = [(await api.get_run(r.id)).wait_reason for r in runs]
            return any(r.startswith("rate limit: 2 starts per 1s reached") for r in reasons)
        await eventually(someone_waits)
        await all_completed(api, runs)
    # When each run started (the claim's time, which is what the rate window counts from).
    starts = sorted([(await api.get_run(r.id)).start_time.ToDatetime() for r in runs])
    # Fixed windows of 1 s: starts 1-2 in the first, 3-4 in the second, 5 in the third.
    assert starts[2] - starts[0] >= timedelta(seconds=0.99) and starts[4] - starts[2] >= timedelta(seconds=0.99)
    assert starts[1] - starts[0] < timedelta(seconds=0.9) and len(tracker.starts) == 5


async def test_a_worker_run_outside_the_execution_window_waits_delayed_until_it_opens(
        make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(sweep_interval=timedelta(milliseconds=100))
    api = await connect(app, settings.admin_key)
    now = datetime.now(UTC)
    closed_minute = (now + timedelta(minutes=5)).minute  # a window that is certainly closed now
    job = await worker_job(api, "windowed", execution_window_cron=f"{closed_minute} * * * *")
    tracker = Tracker()
    tracker.release.set()
    worker = Worker(address(app), api.key, slots=2)
    tracked(worker, "windowed", tracker)
    async with serving(worker):
        run = (await trigger(api, job, 1))[0]
        delayed = await api.wait_status(run.id, S.RUN_STATUS_DELAYED)
        opens = delayed.scheduled_time.ToDatetime(tzinfo=UTC)
        assert opens.minute == closed_minute and opens > now
        assert delayed.wait_reason.startswith(f"outside the execution window '{closed_minute} * * * *' (UTC)")
        assert tracker.starts == [] and delayed.attempt == 0
        # Opening the window (every minute matches) releases the waiting run to the worker.
        await update(api, job, execution_window_cron="* * * * *")
        done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert done.wait_reason == "" and len(tracker.starts) == 1
    await api.channel.close()


async def test_many_keyed_worker_runs_do_not_delay_flow_controlled_http_runs(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    # Few free slots: each gated claim of the HTTP dispatcher looks at few gates.
    app = await make_app(dispatch_concurrency=4, claim_batch_size=4)
    api = await connect(app, settings.admin_key)
    keyed = await worker_job(api, "many-keys", max_concurrency_per_key=1)
    for chunk in range(3):  # 3,000 gates, one per key; no worker connected, so they all wait
        await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=keyed.id, runs=[
            job_pb2.RunOptions(concurrency_key=f"k{chunk}-{i}") for i in range(1000)]), metadata=api.metadata)
    limited = await api.create_job("limited-http", sink.script("/limited"), max_concurrency=1)
    for _ in range(3):
        run = await api.trigger(limited)
        # The HTTP dispatcher never visits the worker plane's gates: no round of thousands of them first.
        await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, timeout=5)
    await api.channel.close()


async def _running(tracker: Tracker, count: int) -> bool:
    return sum(tracker.running.values()) == count


async def _counted(api: Api, runs: list[run_pb2.Run], expected: dict[int, int]) -> bool:
    return await _statuses(api, runs) == expected
