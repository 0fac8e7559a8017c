"""Log lines and progress from worker handlers travel on the worker's stream: batched, recorded as run events in
the order each handler sent them, answered with their sequence numbers; a report about an assignment the session
does not hold, or with invalid content, is refused in-stream and the stream stays up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from strait_client import FailedPreconditionError, InvalidArgumentError
from strait_client._errors import from_rpc_error
from strait_client.v1 import run_pb2, worker_pb2, worker_pb2_grpc
from strait_client.worker import TaskContext
from strait_server.app import App
from tests.conftest import Api, eventually
from tests.integration.test_workers import sdk_worker, serving, worker_job

W = worker_pb2
S = run_pb2


async def test_concurrent_handlers_logs_and_progress_become_events_in_their_order(app: App, api: Api) -> None:
    job = await worker_job(api, "chatty")
    worker = sdk_worker(app, api, slots=40)
    started = asyncio.Event()
    running = 0

    @worker.handler("chatty")
    async def chatty(ctx: TaskContext, payload: Any) -> list[int]:
        nonlocal running
        running += 1
        if running == 40:
            started.set()
        await started.wait()  # all 40 report at once: their lines share batches
        seqs = []
        for i in range(5):
            seqs.append(await ctx.log(f"line {i}", level="debug" if i else "info", data={"i": i}))
            seqs.append(await ctx.progress(20 * (i + 1), f"step {i}", step=f"s{i}"))
        return seqs

    async with serving(worker):
        runs = [await api.trigger(job, payload_json=f'{{"n": {n}}}') for n in range(40)]
        done = [await api.wait_status(r.id, S.RUN_STATUS_COMPLETED) for r in runs]
    for run in done:
        events = [e for e in await api.events(run.id) if e.type in ("log", "progress")]
        assert [(e.type, e.message) for e in events] == [
            (kind, f"{word} {i}") for i in range(5) for kind, word in (("log", "line"), ("progress", "step"))]
        assert [e.sequence for e in events] == [int(s) for s in json.loads(run.output_json)]
        logs = [e for e in events if e.type == "log"]
        assert logs[0].data_json and '"level": "info"' in logs[0].data_json and '"i": 0' in logs[0].data_json
        assert '"level": "debug"' in logs[1].data_json
        assert '"percent": 100' in events[-1].data_json


async def test_an_invalid_report_raises_in_the_handler_and_the_run_goes_on(app: App, api: Api) -> None:
    job = await worker_job(api, "careless")
    worker = sdk_worker(app, api)
    refused: list[Exception] = []

    @worker.handler("careless")
    async def careless(ctx: TaskContext, payload: Any) -> str:
        for bad in (ctx.log("x", level="loud"), ctx.log(""), ctx.progress(101)):
            try:
                await bad
            except InvalidArgumentError as exc:
                refused.append(exc)
        await ctx.log("still here")
        return "ok"

    async with serving(worker):
        run = await api.trigger(job)
        await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert [e.message for e in refused] == ["log.level: must be debug, info, warn or error", "log.message: is required",
                                         "progress.percent: must be between 0 and 100"]
    assert [e.message for e in await api.events(run.id) if e.type == "log"] == ["still here"]


async def test_a_report_after_the_run_was_taken_away_raises_failed_precondition(app: App, api: Api) -> None:
    job = await worker_job(api, "stubborn")
    worker = sdk_worker(app, api)
    outcome: list[BaseException] = []

    @worker.handler("stubborn")
    async def stubborn(ctx: TaskContext, payload: Any) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            try:  # a last word on the way out: the run is no longer this worker's
                await asyncio.shield(ctx.log("cleaning up"))
            except FailedPreconditionError as exc:
                outcome.append(exc)
            raise
        return "never"

    async with serving(worker):
        run = await api.trigger(job)
        await api.wait_status(run.id, S.RUN_STATUS_EXECUTING)
        await api.runs.CancelRun(S.CancelRunRequest(id=run.id), metadata=api.metadata)

        async def refused() -> bool:
            return bool(outcome)
        await eventually(refused, timeout=5)
    assert isinstance(outcome[0], FailedPreconditionError) and outcome[0].reason == "RUN_NOT_EXECUTING"
    assert "cleaning up" not in [e.message for e in await api.events(run.id)]


async def test_the_raw_stream_refuses_bad_reports_precisely(app: App, api: Api) -> None:
    job = await worker_job(api, "w")
    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)
    call = stub.Connect(metadata=api.metadata, timeout=15)
    await call.write(W.ConnectRequest(hello=W.Hello(slots=1, handlers=[W.Handler(job_slug="w")])))
    assert (await call.read()).WhichOneof("message") == "welcome"
    run = await api.trigger(job)
    assignment = (await call.read()).assignments.assignments[0]
    assert assignment.run_id == run.id

    # A report about an assignment this session does not hold, and an invalid one: refused, the stream stays up.
    await call.write(W.ConnectRequest(reports=W.SubmitReports(reports=[
        W.TaskReport(report_id=1, assignment_id="nope", log=W.TaskLog(message="hi")),
        W.TaskReport(report_id=2, assignment_id=assignment.assignment_id,
                     log=W.TaskLog(message="hi", data_json="[1]")),
        W.TaskReport(report_id=3, assignment_id=assignment.assignment_id,
                     progress=W.TaskProgress(percent=42, message="on its way"))])))
    answers: dict[int, Any] = {}
    while len(answers) < 3:
        reply = (await call.read()).reports_recorded
        answers |= {r.report_id: r for r in reply.rejected} | {r.report_id: r for r in reply.recorded}
    assert answers[1].reason == W.REJECT_REASON_STALE_ASSIGNMENT
    assert answers[2].reason == W.REJECT_REASON_INVALID_REPORT and "log.data_json" in answers[2].message
    progress = [e for e in await api.events(run.id) if e.type == "progress"]
    assert [(e.sequence, e.message) for e in progress] == [(answers[3].sequence, "on its way")]

    # A report without content ends the stream with INVALID_ARGUMENT naming it.
    await call.write(W.ConnectRequest(reports=W.SubmitReports(reports=[
        W.TaskReport(report_id=4, assignment_id=assignment.assignment_id)])))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while True:
            await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert from_rpc_error(err.value).field_violations == [("reports.reports[0]", "needs a log or a progress")]
