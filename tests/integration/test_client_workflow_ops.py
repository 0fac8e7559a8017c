"""Operating workflow runs with the client (Client and AsyncClient) against a real server, database and HTTP
endpoints: approvals approved, rejected and refused to other keys, events sent with `client.events.send` (once
per idempotency key, and retried after a lost answer only with one), steps completed and skipped by hand, runs
paused and resumed, and the run's graph."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from strait_client import (
    ApprovalStep,
    AsyncClient,
    Client,
    Event,
    FailedPreconditionError,
    InvalidArgumentError,
    JobStep,
    MapCounts,
    MapSpec,
    NotFoundError,
    OnFailure,
    PermissionDeniedError,
    SentEvent,
    SkipReason,
    SleepStep,
    Step,
    StepRun,
    StepRunStatus,
    TriggerRule,
    UnavailableError,
    WaitForEventStep,
    WorkflowRun,
    WorkflowRunEvent,
    WorkflowRunGraph,
    WorkflowRunGraphEdge,
    WorkflowRunGraphNode,
    WorkflowRunStatus,
)
from strait_server.app import App
from strait_server.config import Settings
from strait_server.store.sent_events import LOCK_KEY
from tests.conftest import Api, eventually
from tests.integration.test_client import address, is_utc
from tests.integration.test_client_retries import LossyProxy
from tests.sink import Reply, Sink

WAITING = StepRunStatus.WAITING


async def waiting(client: AsyncClient, run_id: str, *refs: str) -> dict[str, StepRun]:
    """The run's steps once every one of `refs` is WAITING."""
    async def check() -> dict[str, StepRun] | None:
        steps = {s.step_ref: s for s in await client.workflow_runs.steps(run_id)}
        return steps if all(steps[ref].status is WAITING for ref in refs) else None
    return await eventually(check)


async def test_approvals_approved_rejected_and_refused(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("ship", sink.script("/ship"))
        await client.workflows.create("gated", [Step("review", approval=ApprovalStep()),
                                                Step("ship", ["review"], job=JobStep(job_slug="ship"))])
        approved = await client.workflows.trigger("gated", {"order": 1})
        rejected = await client.workflows.trigger("gated", {"order": 2})
        review = (await waiting(client, approved.id, "review"))["review"]
        assert review.waiting_reason == "approval" and review.wake_time is None  # no timeout
        await waiting(client, rejected.id, "review")

        step = await client.workflow_runs.approve(approved.id, "review", comment="looks fine")
        assert type(step) is StepRun and step.status is StepRunStatus.COMPLETED and step.step_ref == "review"
        assert (step.output["approver"], step.output["comment"]) == ("test", "looks fine")  # the key's name
        done = await client.workflow_runs.wait(approved.id, timeout=20)
        assert done.status is WorkflowRunStatus.COMPLETED
        assert [r.json()["parent_outputs"]["review"]["comment"] for r in sink.for_path("/ship")] == ["looks fine"]
        with pytest.raises(FailedPreconditionError):  # decided already (and the run ended)
            await client.workflow_runs.approve(approved.id, "review")

        step = await client.workflow_runs.reject(rejected.id, "review", reason="too risky")
        assert step.status is StepRunStatus.FAILED and step.error == "rejected by test: too risky"
        done = await client.workflow_runs.wait(rejected.id, timeout=20)
        assert done.status is WorkflowRunStatus.FAILED and "too risky" in done.error
        assert len(sink.for_path("/ship")) == 1  # the rejected run shipped nothing

        # Only the keys an approval names may decide it; the others change nothing.
        await client.workflows.create("lead-only", [Step("review", approval=ApprovalStep(approvers=["lead"]))])
        guarded = await client.workflows.trigger("lead-only")
        await waiting(client, guarded.id, "review")
        for decide in (client.workflow_runs.approve, client.workflow_runs.reject):
            with pytest.raises(PermissionDeniedError):
                await decide(guarded.id, "review")
        assert (await client.workflow_runs.steps(guarded.id))[0].status is WAITING
        with pytest.raises(NotFoundError):
            await client.workflow_runs.approve(guarded.id, "nope")
        with pytest.raises(NotFoundError):
            await client.workflow_runs.reject("wfr_missing", "review")
        with pytest.raises(InvalidArgumentError):
            await client.workflow_runs.approve(guarded.id, "Not-A-Ref")
        await client.workflow_runs.cancel(guarded.id)


async def test_events_resolve_waits_once_per_idempotency_key(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("ship", sink.script("/ship"))
        paid = WaitForEventStep(event_key_template="order-{{ input.order }}-paid", match="payload.amount >= 10")
        await client.workflows.create("pay", [Step("paid", wait_for_event=paid),
                                              Step("ship", ["paid"], job=JobStep(job_slug="ship"))])
        run = await client.workflows.trigger("pay", {"order": 5})
        other = await client.workflows.trigger("pay", {"order": 6})
        step = (await waiting(client, run.id, "paid"))["paid"]
        assert step.waiting_reason == "event:order-5-paid"

        refused = await client.events.send("order-5-paid", {"amount": 3})  # the match refuses it
        assert type(refused) is SentEvent and isinstance(refused, Event)
        assert refused.matched_steps == 0 and not refused.idempotent_repeat and refused.idempotency_key == ""
        sent = await client.events.send("order-5-paid", {"amount": 12}, idempotency_key="pay-5")
        assert sent.id.startswith("evt_") and sent.id != refused.id and sent.key == "order-5-paid"
        assert (sent.payload, sent.idempotency_key, sent.matched_steps, sent.idempotent_repeat) == (
            {"amount": 12}, "pay-5", 1, False)
        assert is_utc(sent.create_time)

        done = await client.workflow_runs.wait(run.id, timeout=20)
        assert done.status is WorkflowRunStatus.COMPLETED
        steps = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}
        assert steps["paid"].output == {"amount": 12} and steps["paid"].status is StepRunStatus.COMPLETED
        assert sink.for_path("/ship")[0].json()["parent_outputs"]["paid"] == {"amount": 12}

        # The same key again returns the first event and resolves nothing, whatever it carries.
        again = await client.events.send("order-6-paid", {"amount": 99}, idempotency_key="pay-5")
        assert again.idempotent_repeat and again.matched_steps == 0
        assert (again.id, again.key, again.payload) == (sent.id, "order-5-paid", {"amount": 12})
        assert (await client.workflow_runs.steps(other.id))[0].status is WAITING
        # Any JSON value is a payload; None is null.
        assert (await client.events.send("order-6-paid", [10, "x"])).payload == [10, "x"]
        assert (await client.events.send("nobody-waits")).payload is None
        assert (await client.workflow_runs.steps(other.id))[0].status is WAITING  # [10, "x"] has no amount

        for key in ("", "x" * 1025):
            with pytest.raises(InvalidArgumentError):
                await client.events.send(key, 1)
        with pytest.raises(TypeError):
            await client.events.send("k", object())
        await client.workflow_runs.cancel(other.id)


async def test_steps_completed_and_skipped_by_hand(app: App, api: Api, sink: Sink) -> None:
    release = asyncio.Event()
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("slow", sink.script("/slow", then=Reply(block=release)))
        await client.jobs.create("use", sink.script("/use"))
        await client.workflows.create("by-hand", [
            Step("slow", job=JobStep(job_slug="slow")),
            Step("use", ["slow"], job=JobStep(job_slug="use")),
            Step("gate", approval=ApprovalStep()),
            Step("after_gate", ["gate"], TriggerRule.NONE_FAILED, job=JobStep(job_slug="use")),
        ])
        run = await client.workflows.trigger("by-hand")
        await sink.wait_for(1, "/slow")
        await waiting(client, run.id, "gate")

        step = await client.workflow_runs.complete_step(run.id, "slow", {"fixed": True})
        assert step.status is StepRunStatus.COMPLETED and step.output == {"fixed": True} and step.step_ref == "slow"
        skipped = await client.workflow_runs.skip_step(run.id, "gate", reason="not needed")
        assert skipped.status is StepRunStatus.SKIPPED and skipped.skip_reason is SkipReason.MANUAL
        done = await client.workflow_runs.wait(run.id, timeout=20)
        release.set()
        assert done.status is WorkflowRunStatus.COMPLETED
        steps = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}
        assert (await client.runs.get(steps["slow"].job_run_id)).status == "canceled"  # its job run stopped
        assert steps["after_gate"].status is StepRunStatus.COMPLETED
        uses = [r.json()["parent_outputs"] for r in sink.for_path("/use")]
        assert sorted(uses, key=str) == [{"gate": None}, {"slow": {"fixed": True}}]  # the skipped gate's output: null
        assert {e.message for e in await client.workflow_runs.events(run.id)} >= {
            "completed by hand", "skipped by hand: not needed"}
        with pytest.raises(FailedPreconditionError):  # the run ended
            await client.workflow_runs.skip_step(run.id, "use")

        # Any JSON value is an output; None (the default) is null.
        await client.workflows.create("gates", [Step("a", approval=ApprovalStep()), Step("b", approval=ApprovalStep())])
        run = await client.workflows.trigger("gates")
        await waiting(client, run.id, "a", "b")
        with pytest.raises(NotFoundError):
            await client.workflow_runs.complete_step(run.id, "nope")
        with pytest.raises(NotFoundError):
            await client.workflow_runs.skip_step("wfr_missing", "a")
        assert (await client.workflow_runs.complete_step(run.id, "a", ["x", 1])).output == ["x", 1]
        assert (await client.workflow_runs.complete_step(run.id, "b")).output is None
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.COMPLETED


async def test_pause_resume_and_the_graph(app: App, api: Api, sink: Sink) -> None:
    release = asyncio.Event()
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("first", sink.script("/first", then=Reply(block=release)))
        await client.jobs.create("second", sink.script("/second"))
        await client.workflows.create("paused", [
            Step("first", job=JobStep(job_slug="first")),
            Step("second", ["first"], job=JobStep(job_slug="second")),
            Step("review", ["first"], approval=ApprovalStep()),
            Step("nap", ["second", "review"], sleep=SleepStep(until_template="2020-01-01T00:00:00Z")),
        ])
        run = await client.workflows.trigger("paused")
        await sink.wait_for(1, "/first")
        paused = await client.workflow_runs.pause(run.id)
        assert type(paused) is WorkflowRun and paused.status is WorkflowRunStatus.PAUSED and not paused.is_terminal
        with pytest.raises(FailedPreconditionError):
            await client.workflow_runs.pause(run.id)
        release.set()  # first completes while paused: what it makes ready waits in READY

        async def held() -> WorkflowRunGraph | None:
            g = await client.workflow_runs.graph(run.id)
            return g if g.ready == ("second", "review") else None
        graph = await eventually(held)
        assert type(graph) is WorkflowRunGraph and all(type(n) is WorkflowRunGraphNode for n in graph.nodes)
        assert (graph.workflow_run_id, graph.version, graph.status, graph.roots) == (
            run.id, 1, WorkflowRunStatus.PAUSED, ("first",))
        assert [(n.step_ref, n.kind, n.status) for n in graph.nodes] == [
            ("first", "job", StepRunStatus.COMPLETED), ("second", "job", StepRunStatus.READY),
            ("review", "approval", StepRunStatus.READY), ("nap", "sleep", StepRunStatus.PENDING)]
        assert set(graph.edges) == {WorkflowRunGraphEdge("first", "second"), WorkflowRunGraphEdge("first", "review"),
                                    WorkflowRunGraphEdge("second", "nap"), WorkflowRunGraphEdge("review", "nap")}
        first = graph.node("first")
        assert first.job_run_id.startswith("run_") and is_utc(first.start_time) and is_utc(first.finish_time)
        assert first.skip_reason is None and first.error == "" and graph.node("nap").start_time is None
        assert sink.for_path("/second") == []  # nothing started while paused

        resumed = await client.workflow_runs.resume(run.id)
        assert resumed.status is WorkflowRunStatus.RUNNING
        with pytest.raises(FailedPreconditionError):
            await client.workflow_runs.resume(run.id)
        await waiting(client, run.id, "review")
        graph = await client.workflow_runs.graph(run.id)
        assert graph.ready == () and graph.node("review").waiting_reason == "approval"
        await client.workflow_runs.approve(run.id, "review")
        done = await client.workflow_runs.wait(run.id, timeout=20)
        assert done.status is WorkflowRunStatus.COMPLETED and len(sink.for_path("/second")) == 1
        graph = await client.workflow_runs.graph(run.id)
        assert graph.status is WorkflowRunStatus.COMPLETED
        assert {n.status for n in graph.nodes} == {StepRunStatus.COMPLETED}
        changes = [(e.from_status, e.to_status) for e in await client.workflow_runs.events(run.id)
                   if e.type == "run_status"]
        assert changes == [(None, "running"), ("running", "paused"), ("paused", "running"), ("running", "completed")]
        with pytest.raises(FailedPreconditionError):
            await client.workflow_runs.pause(run.id)
        for missing in (client.workflow_runs.graph, client.workflow_runs.pause, client.workflow_runs.resume):
            with pytest.raises(NotFoundError):
                await missing("wfr_missing")


def watch_until(client: Client, run_id: str, found: Callable[[WorkflowRunEvent], bool]) -> WorkflowRunEvent:
    """The first event of the run (stored or live) that `found` accepts; the watch ends the wait."""
    for event in client.workflow_runs.watch(run_id, timeout=20):
        if found(event):
            return event
    raise AssertionError("the run ended first")


def became(ref: str, status: StepRunStatus) -> Callable[[WorkflowRunEvent], bool]:
    return lambda e: e.type == "step_status" and e.step_ref == ref and e.to_status is status


async def test_the_blocking_client(app: App, api: Api, sink: Sink) -> None:
    ship = sink.script("/sync-ship", then=Reply(body='{"shipped": true}'))

    def scenario() -> None:
        with Client(address(app), api.key, timeout=10) as client:
            client.jobs.create("ship", ship)
            client.workflows.create("ops", [
                Step("review", approval=ApprovalStep()),
                Step("audit", approval=ApprovalStep(), on_failure=OnFailure.IGNORE),
                Step("paid", wait_for_event=WaitForEventStep(event_key_template="paid-{{ input.n }}")),
                Step("manual", approval=ApprovalStep()),
                Step("extra", approval=ApprovalStep()),
                Step("ship", ["review", "paid", "manual"], job=JobStep(job_slug="ship")),
            ])
            run = client.workflows.trigger("ops", {"n": 1})
            for ref in ("review", "audit", "paid", "manual", "extra"):
                watch_until(client, run.id, became(ref, WAITING))

            assert client.workflow_runs.approve(run.id, "review", "ok").output["comment"] == "ok"
            assert client.workflow_runs.reject(run.id, "audit", "later").error == "rejected by test: later"
            assert client.workflow_runs.complete_step(run.id, "manual", {"by": "hand"}).output == {"by": "hand"}
            assert client.workflow_runs.skip_step(run.id, "extra").skip_reason is SkipReason.MANUAL
            assert client.workflow_runs.pause(run.id).status is WorkflowRunStatus.PAUSED

            sent = client.events.send("paid-1", {"amount": 5}, idempotency_key="paid-1")
            assert (sent.matched_steps, sent.idempotent_repeat, sent.payload) == (1, False, {"amount": 5})
            watch_until(client, run.id, became("ship", StepRunStatus.READY))
            graph = client.workflow_runs.graph(run.id)
            assert graph.status is WorkflowRunStatus.PAUSED and graph.ready == ("ship",)
            assert graph.roots == ("review", "audit", "paid", "manual", "extra")
            assert {(e.parent, e.child) for e in graph.edges} == {("review", "ship"), ("paid", "ship"),
                                                                  ("manual", "ship")}
            assert {n.step_ref: n.status for n in graph.nodes} == {
                "review": "completed", "audit": "failed", "paid": "completed", "manual": "completed",
                "extra": "skipped", "ship": "ready"}
            assert sink.for_path("/sync-ship") == []

            assert client.workflow_runs.resume(run.id).status is WorkflowRunStatus.RUNNING
            done = client.workflow_runs.wait(run.id, timeout=20)
            assert done.status is WorkflowRunStatus.COMPLETED  # the rejected audit is ignored
            assert {s.step_ref: s.output for s in client.workflow_runs.steps(run.id)}["ship"] == {"shipped": True}
            again = client.events.send("paid-1", {"amount": 6}, idempotency_key="paid-1")
            assert again.idempotent_repeat and again.id == sent.id and again.matched_steps == 0
            with pytest.raises(FailedPreconditionError):
                client.workflow_runs.resume(run.id)
            with pytest.raises(NotFoundError):
                client.workflow_runs.graph("wfr_missing")

    await asyncio.to_thread(scenario)


@pytest.fixture
async def lossy(app: App) -> AsyncIterator[LossyProxy]:
    p = LossyProxy(app.port)
    await p.start()
    yield p
    await p.close()


@contextlib.asynccontextmanager
async def event_key_locked(database_url: str, project_id: str, key: str) -> AsyncIterator[None]:
    """Holds the lock SendEvent takes on the event's key: the send waits on it until released."""
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    await conn.execute(LOCK_KEY, project_id, key)
    try:
        yield
    finally:
        await tx.rollback()
        await conn.close()


async def _lock_awaited(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"))
    finally:
        await conn.close()


async def _events_with_key(database_url: str, key: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE key = $1", key))
    finally:
        await conn.close()


async def test_a_send_whose_answer_was_lost_is_retried_only_with_an_idempotency_key(
        app: App, api: Api, settings: Settings, lossy: LossyProxy) -> None:
    async with AsyncClient(address(app), api.key) as client, AsyncClient(lossy.address, api.key) as through:
        await client.workflows.create("lost", [Step("w", wait_for_event=WaitForEventStep(
            event_key_template="{{ input.key }}"))])
        for key, idempotency_key in (("keyed", "once"), ("unkeyed", "")):
            run = await client.workflows.trigger("lost", {"key": key})
            await waiting(client, run.id, "w")
            async with event_key_locked(settings.database_url, run.project_id, key):
                call = asyncio.ensure_future(through.events.send(key, {"v": 1}, idempotency_key=idempotency_key))
                await eventually(lambda: _lock_awaited(settings.database_url))
                lossy.armed = True  # the server's answer to this send will be lost
            # The lock is released: the event commits and resolves the wait, and the answer is cut.
            if idempotency_key:
                sent = await call  # retried: the repeat returns the event the first attempt stored
                assert sent.idempotent_repeat and sent.matched_steps == 0 and sent.payload == {"v": 1}
            else:
                with pytest.raises(UnavailableError):  # not retried: a retry could send it twice
                    await call
            assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.COMPLETED
            assert (await client.workflow_runs.steps(run.id))[0].output == {"v": 1}
            assert await _events_with_key(settings.database_url, key) == 1  # sent once either way
        assert lossy.cuts == 2


async def test_a_map_step_and_its_instances(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("square", sink.script("/square"))
        await client.workflows.create("squares", [Step("each", job=JobStep(job_slug="square"),
                                                       map=MapSpec(items="input.n", max_concurrency=2))])
        run = await client.workflows.trigger("squares", {"n": [3, 1, 2]})
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.COMPLETED
        node, *instances = await client.workflow_runs.steps(run.id, "each")
        assert node.map_index == -1 and node.map_counts == MapCounts(total=3, started=3, done=3, failed=0)
        assert [i.map_index for i in instances] == [0, 1, 2] and all(i.job_run_id for i in instances)
        assert node.output == [i.output for i in instances]
        assert sorted(r.json()["item"] for r in sink.for_path("/square")) == [1, 2, 3]
        graph = await client.workflow_runs.graph(run.id)
        assert graph.nodes[0].map_counts == node.map_counts
        assert [s.step_ref for s in await client.workflow_runs.steps(run.id)] == ["each"]  # no instances


async def test_retry_and_replay_from_the_client(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("flaky", sink.script("/flaky", Reply(status=500)), max_attempts=1)
        await client.jobs.create("after", sink.script("/after"))
        await client.workflows.create("redo", [Step("flaky", job=JobStep(job_slug="flaky")),
                                               Step("after", ["flaky"], job=JobStep(job_slug="after"))])
        run = await client.workflows.trigger("redo")
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.FAILED
        reopened = await client.workflow_runs.retry_step(run.id, "flaky")
        assert type(reopened) is WorkflowRun and reopened.status is WorkflowRunStatus.RUNNING
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.COMPLETED
        replayed = await client.workflow_runs.replay_subtree(run.id, "after")
        assert replayed.status is WorkflowRunStatus.RUNNING
        assert (await client.workflow_runs.wait(run.id, timeout=20)).status is WorkflowRunStatus.COMPLETED
        assert len(sink.for_path("/after")) == 2
        with pytest.raises(FailedPreconditionError):
            await client.workflow_runs.retry_step(run.id, "after")  # it completed

    def replay_unknown_step() -> None:  # the blocking client, off the event loop that serves it
        with Client(address(app), api.key) as sync_client, pytest.raises(NotFoundError):
            sync_client.workflow_runs.replay_subtree(run.id, "nope")
    await asyncio.to_thread(replay_unknown_step)
