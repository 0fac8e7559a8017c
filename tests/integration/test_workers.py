"""The worker plane end to end: runs of worker jobs reach connected workers (the Python SDK, or the raw stream)
over WorkerService.Connect, routed by the workers' handlers, within their slots; results settle them like any
outcome; a stream that ends gives its runs to another worker without spending their attempts; bad input gets
precise codes and leaves the stream up where it can."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from strait_client.v1 import (
    job_pb2,
    project_pb2,
    run_pb2,
    worker_pb2,
    worker_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)
from strait_client.worker import NonRetryableError, TaskContext, Worker
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.integration.test_client import address
from tests.sink import Reply, Sink

W = worker_pb2
S = run_pb2


async def worker_job(api: Api, slug: str, queue: str = "default", **fields: Any) -> job_pb2.Job:
    return (await api.jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
        slug=slug, execution_mode=job_pb2.EXECUTION_MODE_WORKER, queue=queue, **fields)),
        metadata=api.metadata)).job


@contextlib.asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """The worker serving in the background until the block ends."""
    task = asyncio.create_task(worker.serve())
    try:
        await asyncio.wait_for(worker.connected.wait(), 15)
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


def sdk_worker(app: App, api: Api, **options: Any) -> Worker:
    return Worker(address(app), api.key, **options)


async def test_a_worker_runs_its_jobs_runs_and_its_output_completes_them(app: App, api: Api) -> None:
    job = await worker_job(api, "resize")
    worker = sdk_worker(app, api, slots=4)
    seen: list[tuple[TaskContext, Any]] = []

    @worker.handler("resize")
    async def resize(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        seen.append((ctx, payload))
        return {"width": payload["width"] // 2}

    async with serving(worker):
        run = await api.trigger(job, payload_json=json.dumps({"width": 640}))
        done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert json.loads(done.output_json) == {"width": 320} and done.attempt == 1
    [(ctx, payload)] = seen
    assert (ctx.run_id, ctx.attempt, ctx.job_slug, ctx.queue, payload) == (run.id, 1, "resize", "default",
                                                                           {"width": 640})
    assert ctx.run_token and ctx.deadline is not None
    statuses = [(e.from_status, e.to_status) for e in await api.events(run.id) if e.type == "status_change"]
    assert statuses == [(S.RUN_STATUS_UNSPECIFIED, S.RUN_STATUS_QUEUED), (S.RUN_STATUS_QUEUED, S.RUN_STATUS_EXECUTING),
                        (S.RUN_STATUS_EXECUTING, S.RUN_STATUS_COMPLETED)]


async def test_runs_go_only_to_workers_with_a_handler_and_wait_queued_for_one(app: App, api: Api) -> None:
    a = await worker_job(api, "a")
    b = await worker_job(api, "b", queue="other")
    ran: list[str] = []
    only_a = sdk_worker(app, api)

    @only_a.handler("a")
    async def handle_a(ctx: TaskContext, payload: Any) -> None:
        ran.append(f"a:{ctx.job_slug}")

    async with serving(only_a):
        run_a, run_b = await api.trigger(a), await api.trigger(b)
        await api.wait_status(run_a.id, S.RUN_STATUS_COMPLETED)
        # Nobody handles b: it stays queued (a claims only its workers' routes), no attempt spent.
        waiting = await api.get_run(run_b.id)
        assert waiting.status == S.RUN_STATUS_QUEUED and waiting.attempt == 0
        only_b = sdk_worker(app, api)

        @only_b.handler("b", queue="other")
        def handle_b(ctx: TaskContext, payload: Any) -> str:  # a sync handler: runs in the worker's threads
            ran.append(f"b:{ctx.job_slug}")
            return "done"

        async with serving(only_b):
            done = await api.wait_status(run_b.id, S.RUN_STATUS_COMPLETED)
    assert sorted(ran) == ["a:a", "b:b"] and json.loads(done.output_json) == "done"


async def test_a_worker_never_holds_more_runs_than_its_slots(app: App, api: Api) -> None:
    job = await worker_job(api, "hold")
    worker = sdk_worker(app, api, slots=2)
    running, most, release = 0, 0, asyncio.Event()

    @worker.handler("hold")
    async def hold(ctx: TaskContext, payload: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    async with serving(worker):
        runs = [await api.trigger(job) for _ in range(6)]
        await eventually(lambda: _count(api, runs, S.RUN_STATUS_EXECUTING, 2))
        assert await _statuses(api, runs) == {S.RUN_STATUS_EXECUTING: 2, S.RUN_STATUS_QUEUED: 4}
        release.set()
        for run in runs:
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert most == 2


async def test_failures_retry_and_non_retryable_ones_fail_the_run(app: App, api: Api) -> None:
    flaky = await worker_job(api, "flaky", max_attempts=3,
                             retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                                              initial_delay={"nanos": 1_000_000}))
    bad = await worker_job(api, "bad", max_attempts=3)
    worker = sdk_worker(app, api)
    calls = 0

    @worker.handler("flaky")
    async def flaky_handler(ctx: TaskContext, payload: Any) -> str:
        nonlocal calls
        calls += 1
        if ctx.attempt == 1:
            raise RuntimeError("try again")
        return "ok"

    @worker.handler("bad")
    async def bad_handler(ctx: TaskContext, payload: Any) -> None:
        raise NonRetryableError("this input will never work")

    async with serving(worker):
        retried, failed = await api.trigger(flaky), await api.trigger(bad)
        done = await api.wait_status(retried.id, S.RUN_STATUS_COMPLETED)
        ended = await api.wait_status(failed.id, S.RUN_STATUS_FAILED)
    assert done.attempt == 2 and calls == 2
    assert ended.attempt == 1 and "this input will never work" in ended.error


async def test_a_lost_stream_gives_its_runs_to_another_worker_without_spending_attempts(app: App, api: Api) -> None:
    job = await worker_job(api, "long", max_attempts=1)
    first = sdk_worker(app, api, slots=3, drain_timeout=0)  # stops at once, its handlers cancelled
    started = asyncio.Event()
    cancelled: list[str] = []

    @first.handler("long")
    async def forever(ctx: TaskContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(ctx.run_id)

    async with serving(first):
        runs = [await api.trigger(job) for _ in range(3)]
        await eventually(lambda: _count(api, runs, S.RUN_STATUS_EXECUTING, 3))
    # The first worker stopped with three runs held: they go back to the queue at once.
    assert sorted(cancelled) == sorted(r.id for r in runs)
    second = sdk_worker(app, api)

    @second.handler("long")
    async def quick(ctx: TaskContext, payload: Any) -> int:
        return ctx.attempt

    async with serving(second):
        for run in runs:
            done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
            # Attempt 1 of 1 again: the loss spent nothing (max_attempts 1 would otherwise have ended it).
            assert done.attempt == 1 and json.loads(done.output_json) == 1
            assert "worker lost; requeued without spending an attempt" in [
                e.message for e in await api.events(run.id)]


async def test_the_raw_protocol_refuses_bad_input_precisely(app: App, api: Api) -> None:
    await worker_job(api, "w")
    await api.create_job("http", "http://127.0.0.1:9/x")
    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)

    async def refused(*messages: W.ConnectRequest) -> grpc.aio.AioRpcError:
        call = stub.Connect(metadata=api.metadata, timeout=10)
        for m in messages:
            await call.write(m)
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        return err.value

    err = await refused(W.ConnectRequest(heartbeat=W.Heartbeat()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "hello" in (err.details() or "")
    err = await refused(W.ConnectRequest(hello=W.Hello(slots=1, handlers=[W.Handler(job_slug="http"),
                                                                          W.Handler(job_slug="nope"),
                                                                          W.Handler(queue="q", job_slug="w")])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.details() or ""
    assert all(p in details for p in ("hello.handlers[0].job_slug", "hello.handlers[1].job_slug",
                                      "hello.handlers[2].queue"))
    err = await refused(W.ConnectRequest(hello=W.Hello(slots=0, handlers=[W.Handler(job_slug="w")])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "hello.slots" in (err.details() or "")

    # A result for an assignment the session does not hold is rejected in-stream; the stream stays up.
    call = stub.Connect(metadata=api.metadata, timeout=10)
    await call.write(W.ConnectRequest(hello=W.Hello(slots=1, handlers=[W.Handler(job_slug="w")])))
    assert (await call.read()).WhichOneof("message") == "welcome"
    await call.write(W.ConnectRequest(results=W.SubmitResults(results=[W.TaskResult(
        assignment_id="nope", run_id="run_x", attempt=1, success=W.TaskSuccess(output_json="1"))])))
    reply = await call.read()
    [rejected] = reply.results_accepted.rejected
    assert (rejected.assignment_id, rejected.reason) == ("nope", W.REJECT_REASON_STALE_ASSIGNMENT)
    await call.write(W.ConnectRequest(heartbeat=W.Heartbeat()))
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK


async def test_worker_jobs_have_no_endpoint(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await worker_job(api, "bad", endpoint_url="http://127.0.0.1:9/x")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "job.endpoint_url" in (err.value.details() or "")
    job = await worker_job(api, "good", queue="images")
    assert (job.execution_mode, job.queue, job.endpoint_url) == (job_pb2.EXECUTION_MODE_WORKER, "images", "")


async def test_a_workflow_step_of_a_worker_job_runs_on_a_worker(app: App, api: Api) -> None:
    await worker_job(api, "stepwork")
    worker = sdk_worker(app, api)

    @worker.handler("stepwork")
    async def step(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        return {"seen": payload.get("n")}

    flows = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
    runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel)
    await flows.CreateWorkflow(workflow_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(
        slug="wf", steps=[workflow_pb2.Step(ref="s", job=workflow_pb2.JobStep(job_slug="stepwork"),
                                            input_template_json='{"n": "{{ input.n }}"}')])), metadata=api.metadata)
    async with serving(worker):
        run = (await flows.TriggerWorkflow(workflow_pb2.TriggerWorkflowRequest(slug="wf", input_json='{"n": 7}'),
                                           metadata=api.metadata)).workflow_run

        async def ended() -> workflow_run_pb2.WorkflowRun | None:
            got = (await runs.GetWorkflowRun(workflow_run_pb2.GetWorkflowRunRequest(id=run.id),
                                             metadata=api.metadata)).workflow_run
            return got if got.status == workflow_run_pb2.WORKFLOW_RUN_STATUS_COMPLETED else None
        await eventually(ended)
    [s] = (await runs.ListStepRuns(workflow_run_pb2.ListStepRunsRequest(workflow_run_id=run.id),
                                   metadata=api.metadata)).step_runs
    assert json.loads(s.output_json) == {"seen": 7}


async def _statuses(api: Api, runs: list[S.Run]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in runs:
        status = (await api.get_run(r.id)).status
        counts[status] = counts.get(status, 0) + 1
    return counts


async def _count(api: Api, runs: list[S.Run], status: int, n: int) -> bool:
    return (await _statuses(api, runs)).get(status, 0) >= n


async def test_a_canceled_run_stops_its_handler_and_frees_the_slot(app: App, api: Api) -> None:
    job = await worker_job(api, "slow")
    worker = sdk_worker(app, api, slots=1)
    stopped: list[str] = []

    @worker.handler("slow")
    async def slow(ctx: TaskContext, payload: Any) -> str:
        if payload["speed"] == "quick":
            return "quick"
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(ctx.run_id)
        return "never"

    async with serving(worker):
        held = await api.trigger(job, payload_json='{"speed": "slow"}')
        await api.wait_status(held.id, S.RUN_STATUS_EXECUTING)
        queued = await api.trigger(job, payload_json='{"speed": "quick"}')  # waits for the one slot
        await api.runs.CancelRun(S.CancelRunRequest(id=held.id), metadata=api.metadata)
        await eventually(lambda: _true(stopped == [held.id]), timeout=5)
        done = await api.wait_status(queued.id, S.RUN_STATUS_COMPLETED)
    assert json.loads(done.output_json) == "quick"
    assert (await api.get_run(held.id)).status == S.RUN_STATUS_CANCELED


async def test_an_attempt_past_its_timeout_is_retried_and_its_handler_stopped(app: App, api: Api) -> None:
    job = await worker_job(api, "stuck", max_attempts=2, timeout={"seconds": 1},
                           retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                                            initial_delay={"nanos": 1_000_000}))
    worker = sdk_worker(app, api)
    stopped: list[int] = []

    @worker.handler("stuck")
    async def stuck(ctx: TaskContext, payload: Any) -> int:
        if ctx.attempt == 1:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(ctx.attempt)
        return ctx.attempt

    async with serving(worker):
        run = await api.trigger(job)
        done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, timeout=20)
    assert done.attempt == 2 and json.loads(done.output_json) == 2 and stopped == [1]
    [first, _] = done.attempts
    assert "timeout" in first.error


async def test_a_stopping_worker_finishes_and_reports_what_it_runs(app: App, api: Api) -> None:
    job = await worker_job(api, "finish")
    worker = sdk_worker(app, api, slots=2)
    release = asyncio.Event()
    started = asyncio.Event()

    @worker.handler("finish")
    async def finish(ctx: TaskContext, payload: Any) -> str:
        started.set()
        await release.wait()
        return "finished"

    task = asyncio.create_task(worker.serve())
    await asyncio.wait_for(worker.connected.wait(), 15)
    run = await api.trigger(job)
    await asyncio.wait_for(started.wait(), 15)
    worker.stop()  # while the handler runs: it finishes, and its result is accepted before the worker exits
    later = await api.trigger(job)
    release.set()
    await asyncio.wait_for(task, 15)
    done = await api.get_run(run.id)
    assert done.status == S.RUN_STATUS_COMPLETED and json.loads(done.output_json) == "finished"
    assert (await api.get_run(later.id)).status == S.RUN_STATUS_QUEUED  # a stopping worker takes nothing new


async def test_a_stopping_server_lets_workers_report_what_they_hold(make_app: AppFactory,
                                                                     settings: Settings) -> None:
    app = await make_app()
    api = await connect(app, settings.admin_key)
    job = await worker_job(api, "held")
    worker = sdk_worker(app, api)
    release, started = asyncio.Event(), asyncio.Event()

    @worker.handler("held")
    async def held(ctx: TaskContext, payload: Any) -> str:
        started.set()
        await release.wait()
        return "reported"

    serving_task = asyncio.create_task(worker.serve())
    await asyncio.wait_for(worker.connected.wait(), 15)
    run = await api.trigger(job)
    await asyncio.wait_for(started.wait(), 15)
    stopping = asyncio.create_task(app.stop())
    hub = app.worker_hub
    assert hub is not None
    await eventually(lambda: _true(hub.draining))
    release.set()  # reported during the drain: settled before the stream ends
    await asyncio.wait_for(stopping, 30)
    worker.stop()
    await asyncio.wait_for(serving_task, 15)
    await api.channel.close()
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow("SELECT status, attempt, output FROM runs WHERE id = $1", run.id)
    finally:
        await conn.close()
    assert row is not None and (row["status"], row["attempt"], json.loads(row["output"])) == ("completed", 1,
                                                                                                "reported")


async def _true(value: bool) -> bool:
    return value


async def test_a_run_that_keeps_losing_its_workers_ends_instead_of_looping(make_app: AppFactory,
                                                                           settings: Settings) -> None:
    app = await make_app(max_lost_requeues=1)
    api = await connect(app, settings.admin_key)
    job = await worker_job(api, "poison", max_attempts=1)
    run = await api.trigger(job)
    for lost in (1, 2):
        worker = sdk_worker(app, api, drain_timeout=0)
        taken = asyncio.Event()

        async def poison(ctx: TaskContext, payload: Any, taken: asyncio.Event = taken) -> None:
            taken.set()
            await asyncio.Event().wait()  # as if it took its worker down

        worker.handler("poison")(poison)

        async with serving(worker):
            await asyncio.wait_for(taken.wait(), 15)
        if lost == 1:  # the first loss is free: queued again, attempt given back
            queued = await api.wait_status(run.id, S.RUN_STATUS_QUEUED)
            assert queued.attempt == 0
    ended = await api.wait_status(run.id, S.RUN_STATUS_CRASHED)
    assert ended.attempt == 1 and ended.error == "worker lost"
    await api.channel.close()


async def test_worker_sessions_are_capped_per_key(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(worker_max_streams_per_key=1)
    api = await connect(app, settings.admin_key)
    await worker_job(api, "w")
    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)
    hello = W.ConnectRequest(hello=W.Hello(slots=1, handlers=[W.Handler(job_slug="w")]))
    first = stub.Connect(metadata=api.metadata, timeout=10)
    await first.write(hello)
    assert (await first.read()).WhichOneof("message") == "welcome"
    second = stub.Connect(metadata=api.metadata, timeout=10)
    await second.write(hello)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await second.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await first.done_writing()
    assert await first.read() is grpc.aio.EOF
    third = stub.Connect(metadata=api.metadata, timeout=10)  # the first ended: room again
    await third.write(hello)
    assert (await third.read()).WhichOneof("message") == "welcome"
    third.cancel()
    await api.channel.close()


async def test_workers_are_listed_and_a_drained_one_gets_nothing_new(app: App, api: Api, settings: Settings) -> None:
    await worker_job(api, "hold2")
    stub = worker_pb2_grpc.WorkerServiceStub(api.channel)
    a, b = sdk_worker(app, api, slots=3, name="a"), sdk_worker(app, api, slots=5, name="b")
    taken: dict[str, list[str]] = {"a": [], "b": []}
    release = asyncio.Event()
    for worker in (a, b):
        async def hold(ctx: TaskContext, payload: Any, name: str = worker.name) -> None:
            taken[name].append(ctx.run_id)
            await release.wait()
        worker.handler("hold2")(hold)

    async with serving(a), serving(b):
        first = await stub.ListWorkers(W.ListWorkersRequest(page_size=1), metadata=api.metadata)
        second = await stub.ListWorkers(W.ListWorkersRequest(page_size=1, page_token=first.next_page_token),
                                        metadata=api.metadata)
        listed = [*first.workers, *second.workers]
        assert sorted((w.name, w.slots) for w in listed) == [("a", 3), ("b", 5)] and not second.next_page_token
        assert all(w.server_id and [(h.queue, h.job_slug) for h in w.handlers] == [("default", "hold2")]
                   for w in listed)
        by_name = {w.name: w for w in listed}
        assert {by_name["a"].id, by_name["b"].id} == {a.session_id, b.session_id}

        drained = await stub.DrainWorker(W.DrainWorkerRequest(id=a.session_id), metadata=api.metadata)
        assert drained.worker.draining

        await asyncio.wait_for(a.draining.wait(), 15)  # within its server's heartbeat
        job = (await api.jobs.GetJob(job_pb2.GetJobRequest(slug="hold2"), metadata=api.metadata)).job
        runs = [await api.trigger(job) for _ in range(4)]
        await eventually(lambda: _count(api, runs, S.RUN_STATUS_EXECUTING, 4))
        assert taken["a"] == [] and sorted(taken["b"]) == sorted(r.id for r in runs)

        async def counted() -> bool:
            got = (await stub.GetWorker(W.GetWorkerRequest(id=b.session_id), metadata=api.metadata)).worker
            return got.in_flight == 4
        await eventually(counted)
        release.set()
        for run in runs:
            await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)

    async def gone() -> bool:  # with its session, once the server has seen the stream end
        try:
            await stub.GetWorker(W.GetWorkerRequest(id=a.session_id), metadata=api.metadata)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            return True
        return False
    await eventually(gone)
    other = await connect(app, settings.admin_key)  # another project sees none of them
    assert not (await stub.ListWorkers(W.ListWorkersRequest(), metadata=other.metadata)).workers
    await other.channel.close()



async def test_a_handler_logs_reports_progress_and_checkpoints_through_its_context(app: App, api: Api) -> None:
    job = await worker_job(api, "resumable", max_attempts=2,
                           retry_policy=job_pb2.RetryPolicy(strategy=job_pb2.RETRY_STRATEGY_FIXED,
                                                            initial_delay={"nanos": 1_000_000}))
    worker = sdk_worker(app, api)
    seen: list[Any] = []

    @worker.handler("resumable")
    async def resumable(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        seen.append(ctx.last_checkpoint)
        await ctx.log("starting", data={"attempt": ctx.attempt})
        await ctx.progress(50, "half way")
        if ctx.attempt == 1:
            await ctx.checkpoint({"done": 5})
            raise RuntimeError("lost the connection to the thing")
        return {"resumed_from": ctx.last_checkpoint}

    async with serving(worker):
        run = await api.trigger(job)
        done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert seen == [None, {"done": 5}] and json.loads(done.output_json) == {"resumed_from": {"done": 5}}
    events = await api.events(run.id)
    assert [e.message for e in events if e.type == "log"] == ["starting", "starting"]
    assert [e.message for e in events if e.type == "progress"] == ["half way", "half way"]


async def test_a_failing_workflow_cancels_the_step_a_worker_runs(app: App, api: Api, sink: Sink) -> None:
    await worker_job(api, "long-step")
    await api.create_job("breaks", sink.script("/breaks", then=Reply(status=400)), max_attempts=1)
    worker = sdk_worker(app, api)
    started, stopped = asyncio.Event(), asyncio.Event()

    @worker.handler("long-step")
    async def long_step(ctx: TaskContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    flows = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
    runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel)
    await flows.CreateWorkflow(workflow_pb2.CreateWorkflowRequest(workflow=workflow_pb2.Workflow(slug="ff", steps=[
        workflow_pb2.Step(ref="long", job=workflow_pb2.JobStep(job_slug="long-step")),
        workflow_pb2.Step(ref="bad", depends_on=["gate"], job=workflow_pb2.JobStep(job_slug="breaks")),
        workflow_pb2.Step(ref="gate", approval=workflow_pb2.ApprovalStep())])), metadata=api.metadata)
    async with serving(worker):
        run = (await flows.TriggerWorkflow(workflow_pb2.TriggerWorkflowRequest(slug="ff"),
                                           metadata=api.metadata)).workflow_run
        await asyncio.wait_for(started.wait(), 15)
        # The approval lets the failing step run: the run fails fast and cancels the step on the worker.
        await runs.ApproveStep(workflow_run_pb2.ApproveStepRequest(id=run.id, step_ref="gate"),
                               metadata=api.metadata)
        await asyncio.wait_for(stopped.wait(), 15)
    got = (await runs.GetWorkflowRun(workflow_run_pb2.GetWorkflowRunRequest(id=run.id),
                                     metadata=api.metadata)).workflow_run
    assert got.status == workflow_run_pb2.WORKFLOW_RUN_STATUS_FAILED
    steps = {s.step_ref: s for s in (await runs.ListStepRuns(workflow_run_pb2.ListStepRunsRequest(
        workflow_run_id=run.id), metadata=api.metadata)).step_runs}
    assert steps["long"].status == workflow_run_pb2.STEP_RUN_STATUS_CANCELED
    assert (await api.get_run(steps["long"].job_run_id)).status == S.RUN_STATUS_CANCELED


async def test_worker_sessions_need_a_key_with_the_worker_scope(app: App, api: Api, settings: Settings) -> None:
    job = await worker_job(api, "w")
    plain = await connect(app, settings.admin_key, job.project_id, scopes=())
    call = worker_pb2_grpc.WorkerServiceStub(plain.channel).Connect(metadata=plain.metadata, timeout=10)
    await call.write(W.ConnectRequest(hello=W.Hello(slots=1, handlers=[W.Handler(job_slug="w")])))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "workers:connect" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await plain.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(scopes=["admin"]), metadata=plain.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "scopes[0]" in (err.value.details() or "")
    made = await plain.projects.CreateApiKey(project_pb2.CreateApiKeyRequest(scopes=["workers:connect"]),
                                             metadata=plain.metadata)
    assert list(made.api_key.scopes) == ["workers:connect"]
    await plain.channel.close()


async def test_a_heartbeating_handler_outlives_its_timeout(app: App, api: Api) -> None:
    job = await worker_job(api, "patient", max_attempts=1, timeout={"seconds": 1})
    worker = sdk_worker(app, api)
    beats = 0

    @worker.handler("patient")
    async def patient(ctx: TaskContext, payload: Any) -> int:
        nonlocal beats
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 2.5:  # longer than the 1 s timeout
            await asyncio.sleep(0.3)  # the work
            assert not await ctx.heartbeat()
            beats += 1
        return beats

    async with serving(worker):
        run = await api.trigger(job)
        done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, timeout=20)
    assert done.attempt == 1 and json.loads(done.output_json) == beats and beats >= 5
