"""WatchWorkflowRun beyond the event history: a snapshot of the run and its steps to start from (events after it
follow without gap or overlap), and the counts of running map steps as they change, at most once a second."""

from __future__ import annotations

import asyncio
import itertools

from strait_client import AsyncClient, MapProgress, StepRunStatus, WorkflowRunEvent, WorkflowRunSnapshot
from strait_client import WorkflowRunStatus as S
from strait_client.v1 import workflow_run_pb2
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address
from tests.integration.test_workflow_maps import mapped
from tests.integration.test_workflow_runs import Flows, step
from tests.sink import Reply, Sink

R = workflow_run_pb2


async def watch(flows: Flows, run_id: str, **request: object) -> list[R.WatchWorkflowRunResponse]:
    return [m async for m in flows.runs.WatchWorkflowRun(
        R.WatchWorkflowRunRequest(workflow_run_id=run_id, **request),  # type: ignore[arg-type]
        metadata=flows.api.metadata, timeout=30) if not m.HasField("keepalive")]


async def test_a_snapshot_mid_run_then_the_events_after_it(api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    release = asyncio.Event()
    await flows.job("a", then=Reply(block=release))
    await flows.job("b")
    await flows.create(step("a", "a"), step("b", "b", "a"))
    run = await flows.trigger()
    await sink.wait_for(1, "/a")

    stream = flows.runs.WatchWorkflowRun(R.WatchWorkflowRunRequest(workflow_run_id=run.id, snapshot=True,
                                                                   after_sequence=1),
                                         metadata=flows.api.metadata, timeout=30)
    first = await anext(aiter(stream))
    assert first.WhichOneof("message") == "snapshot"
    snap = first.snapshot
    stored = await flows.events(run.id)
    # Everything stored so far is in the snapshot (a is running, b waits for it); after_sequence is ignored.
    assert snap.sequence == len(stored) == stored[-1].sequence > 1
    assert snap.workflow_run.id == run.id and snap.workflow_run.status == R.WORKFLOW_RUN_STATUS_RUNNING
    assert [(s.step_ref, s.status) for s in snap.step_runs] == [
        ("a", R.STEP_RUN_STATUS_RUNNING), ("b", R.STEP_RUN_STATUS_PENDING)]
    release.set()
    rest = [m async for m in stream if not m.HasField("keepalive")]
    assert {m.WhichOneof("message") for m in rest} == {"event"}  # no map: no map progress
    sequences = [m.event.sequence for m in rest]
    assert sequences == list(range(snap.sequence + 1, snap.sequence + 1 + len(sequences)))
    assert (rest[-1].event.type, rest[-1].event.to_status) == ("run_status", "completed")
    assert [e.sequence for e in await flows.events(run.id)] == list(range(1, sequences[-1] + 1))

    # An ended run: its final snapshot, and the stream ends.
    [only] = await watch(flows, run.id, snapshot=True)
    assert only.snapshot.workflow_run.status == R.WORKFLOW_RUN_STATUS_COMPLETED
    assert only.snapshot.sequence == sequences[-1]
    assert {s.status for s in only.snapshot.step_runs} == {R.STEP_RUN_STATUS_COMPLETED}


async def test_map_progress_at_most_once_a_second_as_instances_end(app: App, api: Api, sink: Sink) -> None:
    flows = Flows(api, sink)
    releases = [asyncio.Event() for _ in range(4)]
    # Each instance's request takes the next reply: the test ends them one at a time.
    await api.create_job("hold", sink.script("/hold", *[Reply(block=r) for r in releases]))
    await flows.create(mapped("fan", "hold", "[1, 2, 3, 4]", max_concurrency=4))
    run = await flows.trigger()
    await sink.wait_for(4, "/hold")

    seen: list[WorkflowRunSnapshot | WorkflowRunEvent | MapProgress] = []
    progress: list[MapProgress] = []
    async with AsyncClient(address(app), api.key) as client:
        async for item in client.workflow_runs.watch_progress(run.id, timeout=30):
            seen.append(item)
            if isinstance(item, MapProgress):
                progress.append(item)
                if item.counts.done < 2:  # end one more instance once its predecessor's end was reported
                    releases[item.counts.done].set()
                else:
                    releases[2].set()
                    releases[3].set()

    assert isinstance(seen[0], WorkflowRunSnapshot)
    [fan] = seen[0].step_runs
    assert fan.status is StepRunStatus.RUNNING and fan.map_counts is not None and fan.map_counts.total == 4
    assert [(p.step_ref, p.counts.total, p.counts.done) for p in progress] == [("fan", 4, 0), ("fan", 4, 1),
                                                                               ("fan", 4, 2)]
    times = [p.time for p in progress if p.time is not None]
    assert len(times) == len(progress)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.99 for gap in gaps), gaps
    events = [e for e in seen if isinstance(e, WorkflowRunEvent)]
    assert events[0].sequence == seen[0].sequence + 1
    assert [e.sequence for e in events] == list(range(events[0].sequence, events[-1].sequence + 1))
    assert events[-1].ends_run and events[-1].to_status is S.COMPLETED
