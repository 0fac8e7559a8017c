"""A worker job's runs live the same life as an HTTP job's, seen through the Python client: retries into
dead_letter and replay, time-to-live, dedup and debounce windows, and the run's watch stream."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from strait_client import AsyncClient, RunStatus
from strait_client.worker import NonRetryableError, TaskContext, Worker
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address
from tests.integration.test_workers import serving


def worker_for(app: App, api: Api, slug: str, seen: list[Any], *, fail: set[str] | None = None) -> Worker:
    """A worker that records the payloads it runs, failing those whose name is in `fail`."""
    worker = Worker(address(app), api.key, slots=4)

    @worker.handler(slug)
    async def handle(ctx: TaskContext, payload: Any) -> Any:
        seen.append(payload)
        if fail is not None and payload["name"] in fail:
            raise RuntimeError(f"cannot handle {payload['name']}")
        return payload
    return worker


async def test_exhausted_retries_dead_letter_and_a_replay_runs_on_a_worker(app: App, api: Api) -> None:
    seen: list[Any] = []
    broken = {"fail"}
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("fragile", execution_mode="worker", max_attempts=2,
                                 retry_policy={"strategy": "fixed", "initial_delay": timedelta(milliseconds=1)})
        async with serving(worker_for(app, api, "fragile", seen, fail=broken)):
            run = await client.jobs.trigger("fragile", {"name": "fail"})
            dead = await client.runs.wait(run.id, timeout=15)
            assert (dead.status, dead.attempt) == (RunStatus.DEAD_LETTER, 2) and "cannot handle fail" in dead.error
            broken.clear()  # fixed: the replay succeeds
            replay = await client.runs.replay(run.id)
            done = await client.runs.wait(replay.id, timeout=15)
    assert (done.status, done.output, done.replay_of_run_id, done.attempt) == (
        RunStatus.COMPLETED, {"name": "fail"}, run.id, 1)
    assert seen == [{"name": "fail"}] * 3


async def test_a_worker_run_nobody_takes_in_time_expires_and_never_runs(app: App, api: Api) -> None:
    seen: list[Any] = []
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("perishable", execution_mode="worker", queue="nobody-yet")
        run = await client.jobs.trigger("perishable", {"n": 7}, ttl=timedelta(seconds=1))
        expired = await client.runs.wait(run.id, timeout=15)
        assert (expired.status, expired.attempt) == (RunStatus.EXPIRED, 0)
        worker = Worker(address(app), api.key)
        worker.handler("perishable", queue="nobody-yet")(_record(seen))
        async with serving(worker):
            fresh = await client.jobs.trigger("perishable", {"n": 8}, ttl=timedelta(seconds=30))
            await client.runs.wait(fresh.id, timeout=15)
    assert seen == [{"n": 8}]


async def test_dedup_and_debounce_windows_hold_for_worker_jobs(app: App, api: Api) -> None:
    seen: list[Any] = []
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("charge", execution_mode="worker", dedup_window=timedelta(minutes=10))
        await client.jobs.create("reindex", execution_mode="worker", debounce_window=timedelta(seconds=1))
        first = await client.jobs.trigger("charge", {"amount": 5}, dedup_key="order-1")
        again = await client.jobs.trigger("charge", {"amount": 6}, dedup_key="order-1")
        assert again.deduplicated and again.id == first.id
        debounced = [await client.jobs.trigger("reindex", {"rev": rev}, debounce_key="tenant-a") for rev in (1, 2, 3)]
        assert {r.id for r in debounced} == {debounced[0].id} and debounced[-1].debounced
        worker = Worker(address(app), api.key)
        worker.handler("charge")(_record(seen))
        worker.handler("reindex")(_record(seen))
        async with serving(worker):
            charged = await client.runs.wait(first.id, timeout=15)
            reindexed = await client.runs.wait(debounced[0].id, timeout=15)
    assert charged.status is RunStatus.COMPLETED and reindexed.status is RunStatus.COMPLETED
    assert sorted(seen, key=str) == [{"amount": 5}, {"rev": 3}]


async def test_watching_a_worker_run_shows_every_transition_and_its_logs(app: App, api: Api) -> None:
    go = asyncio.Event()
    worker = Worker(address(app), api.key)

    @worker.handler("watched")
    async def watched(ctx: TaskContext, payload: Any) -> None:
        await ctx.log("halfway")
        await go.wait()
        raise NonRetryableError("gave up")

    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("watched", execution_mode="worker", max_attempts=3)
        async with serving(worker):
            run = await client.jobs.trigger("watched", None)
            events = await asyncio.wait_for(_watch(client, run.id, go), 15)
    assert events == [("status_change", "queued"), ("status_change", "executing"), ("log", "halfway"),
                      ("status_change", "failed")]


async def _watch(client: AsyncClient, run_id: str, go: asyncio.Event) -> list[tuple[str, str]]:
    """The run's events until its end (`go` set once its log line came)."""
    seen = []
    async for event in client.runs.watch(run_id):
        seen.append((event.type, str(event.to_status.value if event.to_status else event.message)))
        if event.type == "log":
            go.set()
    return seen


def _record(seen: list[Any]) -> Any:
    async def handle(ctx: TaskContext, payload: Any) -> Any:
        seen.append(payload)
        return payload
    return handle
