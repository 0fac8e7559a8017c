"""WatchWorkflowRuns: the project's workflow runs as their statuses change, in commit order, filtered by workflow,
resumable by token without gap or repeat, and never showing another project's runs."""

from __future__ import annotations

import asyncio
import base64

import grpc
import pytest

from strait_client.v1 import workflow_run_pb2, workflow_run_pb2_grpc
from strait_server.app import App
from strait_server.config import Settings
from tests.conftest import Api, connect
from tests.integration.test_api_contract import violations
from tests.integration.test_workflow_runs import Flows, step
from tests.sink import Reply, Sink

R = workflow_run_pb2


class Feed:
    """An open WatchWorkflowRuns stream, read in the background; keepalives left out."""

    def __init__(self, flows: Flows, **request: str) -> None:
        self.stream = flows.runs.WatchWorkflowRuns(R.WatchWorkflowRunsRequest(**request),
                                                   metadata=flows.api.metadata, timeout=60)
        self.messages: list[R.WatchWorkflowRunsResponse] = []
        self._received = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Feed:
        await self.stream.initial_metadata()  # the feed's position is taken: what follows is on it
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stream.cancel()
        assert self._task is not None
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async for message in self.stream:
            if message.HasField("event"):
                async with self._received:
                    self.messages.append(message)
                    self._received.notify_all()

    def changes(self) -> list[tuple[str, str, str]]:
        return [(m.event.workflow_run_id, m.event.from_status, m.event.to_status) for m in self.messages]

    async def until(self, *wanted: tuple[str, str, str], timeout: float = 20.0) -> None:
        async def seen() -> None:
            async with self._received:
                await self._received.wait_for(lambda: set(wanted) <= set(self.changes()))
        await asyncio.wait_for(seen(), timeout)


async def test_new_and_changing_runs_come_in_commit_order_filtered_and_resumable(api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    release = asyncio.Event()
    await flows.job("slow", then=Reply(block=release))
    await flows.job("quick")
    billing = await flows.create(step("a", "slow"), slug="billing")
    await flows.create(step("a", "quick"), slug="shipping")
    async with Feed(flows) as every, Feed(flows, workflow_id=billing.id) as billing_only:
        bill = await flows.trigger("billing")
        ship = await flows.trigger("shipping")
        await every.until((ship.id, "", "running"), (ship.id, "running", "completed"), (bill.id, "", "running"))
        release.set()
        await every.until((bill.id, "running", "completed"))
        await billing_only.until((bill.id, "running", "completed"))
    # A run's changes in the order they happened, each once, with the run's workflow.
    assert [c for c in every.changes() if c[0] == bill.id] == [(bill.id, "", "running"),
                                                               (bill.id, "running", "completed")]
    assert [c for c in every.changes() if c[0] == ship.id] == [(ship.id, "", "running"),
                                                               (ship.id, "running", "completed")]
    assert {m.workflow_id for m in every.messages if m.event.workflow_run_id == bill.id} == {billing.id}
    assert all(m.event.type == "run_status" for m in every.messages)
    assert billing_only.changes() == [(bill.id, "", "running"), (bill.id, "running", "completed")]

    # Resuming after any message gives exactly the messages after it.
    for i, message in enumerate(every.messages):
        async with Feed(flows, resume_token=message.resume_token) as resumed:
            rest = every.changes()[i + 1:]
            if rest:
                await resumed.until(*rest)
        assert resumed.changes() == rest


async def test_a_bad_token_or_workflow_id_is_refused_and_other_projects_stay_unseen(app: App, api: Api, sink: Sink,
                                                                                   settings: Settings) -> None:
    flows = Flows(api, sink)
    await flows.job("quick")
    await flows.create(step("a", "quick"))
    other = await connect(app, settings.admin_key)
    try:
        stranger = Flows(other, sink)
        async with Feed(stranger) as theirs, Feed(flows) as ours:
            run = await flows.trigger()
            await ours.until((run.id, "running", "completed"))
        assert theirs.changes() == []
    finally:
        await other.channel.close()
    nul = base64.urlsafe_b64encode(b"w1:1:wfr_\x00:1").decode()
    for request, field in ((R.WatchWorkflowRunsRequest(resume_token="not-a-token"), "resume_token"),
                           (R.WatchWorkflowRunsRequest(resume_token=nul), "resume_token"),
                           (R.WatchWorkflowRunsRequest(workflow_id="w" * 65), "workflow_id")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel).WatchWorkflowRuns(
                    request, metadata=api.metadata, timeout=10):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err.value)
