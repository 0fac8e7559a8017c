"""A trigger of a worker job, while a worker connected to the same server handles it with a free slot, writes the
run already claimed and hands it to that worker at once (no wake-up, no claim): the answer says EXECUTING and the
worker has it. Without a free slot, a draining worker, or a key or schedule, the run is queued as usual."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import run_pb2, worker_pb2, worker_pb2_grpc
from strait_client.worker import TaskContext
from strait_server.app import App
from tests.conftest import Api, eventually
from tests.integration.test_workers import sdk_worker, serving, worker_job

S = run_pb2
W = worker_pb2


async def test_an_idle_workers_run_is_executing_when_the_trigger_answers(app: App, api: Api) -> None:
    job = await worker_job(api, "handed")
    worker = sdk_worker(app, api, slots=1)
    started: list[str] = []
    release = asyncio.Event()

    @worker.handler("handed")
    async def handed(ctx: TaskContext, payload: Any) -> str:
        started.append(ctx.run_id)
        await release.wait()
        return "done"

    async with serving(worker):
        first = await api.trigger(job)  # the one slot is free: handed over
        assert first.status == S.RUN_STATUS_EXECUTING and first.attempt == 1

        async def holds_it() -> bool:
            return started == [first.id]
        await eventually(holds_it, timeout=5)
        second = await api.trigger(job)  # no free slot: queued, and started once the first is done
        assert second.status == S.RUN_STATUS_QUEUED
        later = Timestamp()
        later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        scheduled = await api.trigger(job, scheduled_time=later)
        keyed = await api.trigger(job, idempotency_key="k-1")
        release.set()
        assert (await api.wait_status(first.id, S.RUN_STATUS_COMPLETED)).output_json == '"done"'
        await api.wait_status(second.id, S.RUN_STATUS_COMPLETED)
        await api.wait_status(keyed.id, S.RUN_STATUS_COMPLETED)
    assert scheduled.status == S.RUN_STATUS_DELAYED and keyed.status == S.RUN_STATUS_QUEUED
    assert started == [first.id, second.id, keyed.id]
    # The handed-over run's history reads as any other's: queued, then executing, then completed.
    changes = [(e.from_status, e.to_status) for e in await api.events(first.id) if e.type == "status_change"]
    assert changes == [(S.RUN_STATUS_UNSPECIFIED, S.RUN_STATUS_QUEUED), (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING),
                       (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_COMPLETED)]


async def test_a_draining_worker_is_handed_nothing(app: App, api: Api) -> None:
    job = await worker_job(api, "drained")
    worker = sdk_worker(app, api, slots=5)

    @worker.handler("drained")
    async def drained(ctx: TaskContext, payload: Any) -> None:
        return None

    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)
    async with serving(worker):
        await stub.DrainWorker(W.DrainWorkerRequest(id=worker.session_id), metadata=api.metadata)
        await asyncio.wait_for(worker.draining.wait(), 15)
        run = await api.trigger(job)
        assert run.status == S.RUN_STATUS_QUEUED
        assert (await api.get_run(run.id)).status == S.RUN_STATUS_QUEUED
