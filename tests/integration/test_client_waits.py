"""`runs.wait` timing out says what holds the run: its endpoint's open circuit (until when), a flow-control
limit, a disabled job, no dispatcher; for the blocking and the asyncio client alike."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from strait_client import AsyncClient, CircuitState, Client, EndpointCircuit, RunStatus
from strait_server.app import Role
from strait_server.config import Settings
from tests.conftest import AppFactory, connect, eventually
from tests.integration.test_client import address
from tests.sink import Reply, Sink


async def test_a_run_held_by_an_open_circuit_times_out_naming_the_circuit_and_its_reopen_time(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=1, circuit_open_for=timedelta(hours=1))
    api = await connect(app, settings.admin_key)
    url = sink.script("/down", then=Reply(503))
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("down", url, max_attempts=5,
                                 retry_policy={"initial_delay": timedelta(milliseconds=10)})
        run = await client.jobs.trigger("down", {})

        async def held() -> bool:  # the failed attempt opened the circuit; the retry was put back for it
            got = await client.runs.get(run.id)
            return got.status is RunStatus.QUEUED and got.error_class == "circuit_open"
        await eventually(held)
        [circuit] = [c async for c in client.circuits.list()]
        assert circuit.state is CircuitState.OPEN and circuit.open_until is not None

        with pytest.raises(TimeoutError) as waited:
            await client.runs.wait(run.id, timeout=0.5)
        assert str(waited.value) == _held_by(run.id, circuit)

        def blocking() -> str:
            with Client(address(app), api.key) as sync, pytest.raises(TimeoutError) as sync_waited:
                sync.runs.wait(run.id, timeout=0.5)
            return str(sync_waited.value)
        assert await asyncio.to_thread(blocking) == _held_by(run.id, circuit)
        # The run says so itself, too.
        assert (await client.runs.get(run.id)).wait_reason == _held_by(run.id, circuit).split("still queued: ")[1]
    await api.channel.close()


def _held_by(run_id: str, circuit: EndpointCircuit) -> str:
    assert circuit.open_until is not None
    return (f"run {run_id} did not finish within 0.5s; still queued: endpoint circuit open: not attempted, "
            f"next try at {circuit.open_until.isoformat()} (the circuit of {circuit.endpoint_url} is open)")


async def test_a_run_held_by_a_concurrency_limit_times_out_naming_the_limit(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app()
    api = await connect(app, settings.admin_key)
    gate = asyncio.Event()
    url = sink.script("/one", then=Reply(200, block=gate))
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("one-at-a-time", url, max_concurrency=1)
        await client.jobs.trigger("one-at-a-time", {})
        await sink.wait_for(1, "/one")
        second = await client.jobs.trigger("one-at-a-time", {})

        async def marked() -> bool:
            return bool((await client.runs.get(second.id)).wait_reason)
        await eventually(marked)
        with pytest.raises(TimeoutError) as waited:
            await client.runs.wait(second.id, timeout=0.3)
        assert str(waited.value) == (f"run {second.id} did not finish within 0.3s; still queued: concurrency "
                                     "limit: 1 runs of this job executing (max_concurrency)")
        gate.set()
        assert (await client.runs.wait(second.id, timeout=15)).status is RunStatus.COMPLETED
    await api.channel.close()


async def test_a_queued_run_without_a_limit_names_a_disabled_job_or_the_missing_dispatcher(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(frozenset({Role.API}))  # nothing dispatches: the run stays queued
    api = await connect(app, settings.admin_key)
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("idle", sink.script("/idle"))
        run = await client.jobs.trigger("idle", {})
        with pytest.raises(TimeoutError) as waited:
            await client.runs.wait(run.id, timeout=0.3)
        assert str(waited.value) == (f"run {run.id} did not finish within 0.3s; still queued: waiting for a free "
                                     "dispatcher slot (a server running the worker role claims it)")
        await client.jobs.update("idle", enabled=False)
        with pytest.raises(TimeoutError) as waited:
            await client.runs.wait(run.id, timeout=0.3)
        assert str(waited.value) == (f"run {run.id} did not finish within 0.3s; still queued: its job 'idle' is "
                                     "disabled; the run starts once the job is enabled")
    await api.channel.close()
