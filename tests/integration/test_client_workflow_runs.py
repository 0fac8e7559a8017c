"""`client.workflows.trigger` and `client.workflow_runs` (Client and AsyncClient) against a real server, database
and HTTP endpoints: runs complete with typed steps and outputs, events follow in order, watches end at the final
event, cancels stop runs, lists filter, idempotency keys return the first run."""

from __future__ import annotations

import asyncio

import pytest

from strait_client import (
    AsyncClient,
    Client,
    FailedPreconditionError,
    JobStep,
    NotFoundError,
    SkipReason,
    Step,
    StepRun,
    StepRunStatus,
    TriggeredWorkflowRun,
    WorkflowRun,
    WorkflowRunChange,
    WorkflowRunEvent,
    WorkflowRunStatus,
)
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address, is_utc
from tests.sink import Reply, Sink


def pipeline() -> list[Step]:
    """fetch, then bill (only for big totals: skipped here) and mail side by side."""
    return [
        Step("fetch", job=JobStep(job_slug="fetch")),
        Step("bill", ["fetch"], job=JobStep(job_slug="bill"), condition="steps.fetch.output.total > 100"),
        Step("mail", ["fetch"], job=JobStep(job_slug="mail")),
    ]


async def test_trigger_wait_steps_events_and_watch(app: App, api: Api, sink: Sink) -> None:
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("fetch", sink.script("/fetch", then=Reply(body='{"total": 12.5}')))
        await client.jobs.create("bill", sink.script("/bill"))
        await client.jobs.create("mail", sink.script("/mail", then=Reply(body='{"sent": true}')))
        wf = await client.workflows.create("orders", pipeline())

        run = await client.workflows.trigger("orders", {"order": 7}, idempotency_key="o-7")
        assert isinstance(run, TriggeredWorkflowRun) and run.id.startswith("wfr_") and not run.idempotent_repeat
        assert (run.workflow_id, run.version, run.input, run.status) == (wf.id, 1, {"order": 7}, "running")

        done = await client.workflow_runs.wait(run.id, timeout=20)
        assert type(done) is WorkflowRun and done.status is WorkflowRunStatus.COMPLETED and done.is_terminal
        assert is_utc(done.finish_time)

        steps = await client.workflow_runs.steps(run.id)
        assert all(isinstance(s, StepRun) for s in steps)
        by_ref = {s.step_ref: s for s in steps}
        assert {ref: (s.status, s.skip_reason) for ref, s in by_ref.items()} == {
            "fetch": (StepRunStatus.COMPLETED, None), "bill": (StepRunStatus.SKIPPED, SkipReason.CONDITION_FALSE),
            "mail": (StepRunStatus.COMPLETED, None)}
        assert by_ref["fetch"].output == {"total": 12.5} and by_ref["mail"].output == {"sent": True}
        assert (await client.runs.get(by_ref["fetch"].job_run_id)).status == "completed"  # an ordinary job run

        events = await client.workflow_runs.events(run.id)
        assert all(isinstance(e, WorkflowRunEvent) for e in events)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert (events[0].type, events[0].to_status) == ("run_status", WorkflowRunStatus.RUNNING)
        assert events[-1].ends_run and events[-1].to_status is WorkflowRunStatus.COMPLETED
        assert {e.to_status for e in events if e.type == "step_status" and e.step_ref == "bill"} >= {"skipped"}
        assert await client.workflow_runs.events(run.id, after_sequence=len(events) - 1) == events[-1:]

        # A watch of a finished run replays its stored events and ends; from its last event it ends at once.
        assert [e async for e in client.workflow_runs.watch(run.id, timeout=10)] == events
        assert [e async for e in client.workflow_runs.watch(run.id, after_sequence=len(events))] == []

        again = await client.workflows.trigger(wf.id, {"order": 8}, idempotency_key="o-7")
        assert again.idempotent_repeat and again.id == run.id and again.input == {"order": 7}
        with pytest.raises(NotFoundError):
            await client.workflows.trigger("nope")
        with pytest.raises(TypeError):
            await client.workflows.trigger("orders", [1, 2])  # type: ignore[arg-type]


async def test_watch_live_cancel_and_list(app: App, api: Api, sink: Sink) -> None:
    release = asyncio.Event()
    async with AsyncClient(address(app), api.key) as client:
        await client.jobs.create("fetch", sink.script("/fetch", then=Reply(block=release)))
        await client.jobs.create("bill", sink.script("/bill"))
        await client.jobs.create("mail", sink.script("/mail"))
        await client.workflows.create("orders", pipeline())
        await client.workflows.create("other", [Step("only", job=JobStep(job_slug="mail"))])
        other = await client.workflows.trigger("other")
        run = await client.workflows.trigger("orders", {"order": 1})

        seen: list[WorkflowRunEvent] = []

        async def follow() -> None:
            async for event in client.workflow_runs.watch(run.id, timeout=20):
                seen.append(event)

        watching = asyncio.create_task(follow())
        await sink.wait_for(1, "/fetch")
        canceled = await client.workflow_runs.cancel(run.id, "no longer needed")
        assert canceled.status is WorkflowRunStatus.CANCELED and "no longer needed" in canceled.error
        await asyncio.wait_for(watching, 20)  # the live watch ends at the final event
        release.set()
        assert seen[-1].ends_run and seen[-1].to_status is WorkflowRunStatus.CANCELED
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        assert {s.status for s in await client.workflow_runs.steps(run.id)} == {StepRunStatus.CANCELED}
        with pytest.raises(FailedPreconditionError):
            await client.workflow_runs.cancel(run.id)

        await client.workflow_runs.wait(other.id, timeout=20)
        assert [r.id async for r in client.workflow_runs.list()] == [run.id, other.id]  # newest first
        assert [r.id async for r in client.workflow_runs.list("orders")] == [run.id]
        assert [r.id async for r in client.workflow_runs.list(statuses=["completed"])] == [other.id]
        assert [r.id async for r in client.workflow_runs.list(statuses=WorkflowRunStatus.CANCELED, page_size=1)] == [
            run.id]
        changes: list[tuple[str, str | None, str | None]] = []
        async for change in client.workflow_runs.watch_all(workflow="orders", from_start=True):
            changes.append((change.workflow_run_id, change.event.from_status, change.event.to_status))
            if len(changes) == 2:
                break
        assert changes == [(run.id, None, "running"), (run.id, "running", "canceled")]  # "other" left out
        with pytest.raises(NotFoundError):
            await client.workflow_runs.get("wfr_missing")


async def test_the_blocking_client(app: App, api: Api, sink: Sink) -> None:
    urls = {slug: sink.script(f"/sync-{slug}", then=Reply(body=f'{{"total": 1, "{slug}": 1}}'))
            for slug in ("fetch", "bill", "mail")}

    def scenario() -> None:
        with Client(address(app), api.key, timeout=10) as client:
            for slug, url in urls.items():
                client.jobs.create(slug, url)
            client.workflows.create("orders", pipeline())
            run = client.workflows.trigger("orders", {"order": 3}, idempotency_key="k")
            assert client.workflows.trigger("orders", idempotency_key="k").idempotent_repeat
            events = list(client.workflow_runs.watch(run.id, timeout=20))
            assert events[-1].ends_run and events[-1].to_status == "completed"
            assert client.workflow_runs.events(run.id) == events
            done = client.workflow_runs.wait(run.id, timeout=5)
            assert done.status is WorkflowRunStatus.COMPLETED and client.workflow_runs.get(run.id) == done
            steps = {s.step_ref: (s.status, s.output) for s in client.workflow_runs.steps(run.id)}
            assert steps == {"fetch": ("completed", {"total": 1, "fetch": 1}), "bill": ("skipped", None),
                             "mail": ("completed", {"total": 1, "mail": 1})}
            assert [r.id for r in client.workflow_runs.list("orders", ["completed"])] == [run.id]
            # The project's feed of workflow runs: this run's creation and completion, then on from a token.
            changes = client.workflow_runs.watch_all(workflow="orders", from_start=True)
            first, second = next(changes), next(changes)
            assert isinstance(first, WorkflowRunChange) and first.workflow_id == client.workflows.get("orders").id
            assert [(c.workflow_run_id, c.event.from_status, c.event.to_status) for c in (first, second)] == [
                (run.id, None, "running"), (run.id, "running", "completed")]
            again = client.workflows.trigger("orders", {"order": 4})
            resumed = client.workflow_runs.watch_all(resume_token=second.resume_token)
            assert (next(resumed).workflow_run_id, next(resumed).event.to_status) == (again.id, "completed")
            with pytest.raises(FailedPreconditionError):
                client.workflow_runs.cancel(run.id)

    await asyncio.to_thread(scenario)
