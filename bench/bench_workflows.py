"""Workflow engine benchmark: a 1,000-way static fan-out/fan-in, idle step-to-step latency along a chain, and a
dynamic map over 10,000 items (each repeat followed by as many plain runs of the same job: the ratio of the
two rates says what the workflow machinery costs on whatever else the machine is doing).

    python bench/bench_workflows.py [--fan-out 1000] [--chain 60] [--repeats 3]

Runs `strait serve --mode all` on a throwaway database (as bench_dispatch.py does) with a keep-alive HTTP
endpoint in this process that answers 200 at once. Prints the median of --repeats fan-out runs (trigger to the
run completed, the join's input checked to hold every leaf's output) and, for each of --repeats runs of a
chain, the p50/p99 of the time from a step's endpoint receiving its POST (the answer follows at once) to the
next step's endpoint receiving its, and their medians.

Same environment variables as bench_dispatch.py: STRAIT_BENCH_DATABASE_URL, STRAIT_BENCH_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import asyncpg

from bench.bench_dispatch import FastSink, _load, _setup
from bench.bench_flow_control import served
from strait_client.v1 import (
    job_pb2,
    job_pb2_grpc,
    run_pb2,
    run_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)

W = workflow_pb2
R = workflow_run_pb2
Metadata = tuple[tuple[str, str], ...]


async def _run_to_end(defs: workflow_pb2_grpc.WorkflowServiceStub, runs: workflow_run_pb2_grpc.WorkflowRunServiceStub,
                      md: Metadata, slug: str) -> tuple[float, R.WorkflowRun]:
    started = time.perf_counter()
    run = (await defs.TriggerWorkflow(W.TriggerWorkflowRequest(slug=slug), metadata=md)).workflow_run
    while run.status == R.WORKFLOW_RUN_STATUS_RUNNING:
        await asyncio.sleep(0.005)
        run = (await runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run.id), metadata=md)).workflow_run
    return time.perf_counter() - started, run


def _step(ref: str, *depends_on: str) -> W.Step:
    return W.Step(ref=ref, depends_on=list(depends_on), job=W.JobStep(job_slug="noop"))


async def fan_out(defs: workflow_pb2_grpc.WorkflowServiceStub, runs: workflow_run_pb2_grpc.WorkflowRunServiceStub,
                  run_api: run_pb2_grpc.RunServiceStub, md: Metadata, width: int, repeats: int) -> None:
    leaves = [_step(f"leaf_{i}", "root") for i in range(width)]
    steps = [_step("root"), *leaves, _step("join", *(s.ref for s in leaves))]
    started = time.perf_counter()
    await defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(slug="fan", steps=steps)), metadata=md)
    print(f"{'CreateWorkflow of ' + str(len(steps)) + ' steps':<44} {(time.perf_counter() - started) * 1000:.0f} ms")
    times = []
    for _ in range(repeats):
        elapsed, run = await _run_to_end(defs, runs, md, "fan")
        assert run.status == R.WORKFLOW_RUN_STATUS_COMPLETED, run
        step_runs = (await runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id), metadata=md)).step_runs
        join = next(s for s in step_runs if s.step_ref == "join")
        payload = json.loads((await run_api.GetRun(run_pb2.GetRunRequest(id=join.job_run_id), metadata=md))
                             .run.payload_json)
        assert len(payload["parent_outputs"]) == width, len(payload["parent_outputs"])
        times.append(elapsed)
    print(f"{f'{width:,}-way fan-out/fan-in, trigger to completed':<44} median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}; {_load()})")
    await run_graph(runs, md, run.id, len(steps))


async def run_graph(runs: workflow_run_pb2_grpc.WorkflowRunServiceStub, md: Metadata, run_id: str,
                    steps: int) -> None:
    """GetWorkflowRunGraph of the last fan-out run: latency (median of 20 calls) and reply size."""
    times, size = [], 0
    for _ in range(20):
        started = time.perf_counter()
        graph = (await runs.GetWorkflowRunGraph(R.GetWorkflowRunGraphRequest(id=run_id), metadata=md)).graph
        times.append(time.perf_counter() - started)
        size = graph.ByteSize()
    assert len(graph.nodes) == steps
    print(f"{f'GetWorkflowRunGraph of {steps:,} steps':<44} median {statistics.median(times) * 1000:.1f} ms, "
          f"{size / 1024:.0f} KiB ({_load()})")


async def chain(defs: workflow_pb2_grpc.WorkflowServiceStub, runs: workflow_run_pb2_grpc.WorkflowRunServiceStub,
                md: Metadata, sink: FastSink, length: int, repeats: int) -> None:
    """`repeats` runs of a chain of `length` steps, one after the other: the p50 and p99 of each run's gaps, and
    their medians."""
    steps = [_step("s0"), *[_step(f"s{i}", f"s{i - 1}") for i in range(1, length)]]
    await defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(slug="chain", steps=steps)), metadata=md)
    sink.track = True
    p50s, p99s = [], []
    for _ in range(repeats):
        p50, p99 = await _chain_run(runs, defs, md, sink, length)
        p50s.append(p50)
        p99s.append(p99)
        print(f"{'idle step-to-step latency':<44} p50 {p50:.2f} ms   p99 {p99:.2f} ms ({length - 1} edges; "
              f"{_load()})")
    print(f"{'idle step-to-step latency (medians)':<44} p50 {statistics.median(p50s):.2f} ms   "
          f"p99 {statistics.median(p99s):.2f} ms")


async def _chain_run(runs: workflow_run_pb2_grpc.WorkflowRunServiceStub, defs: workflow_pb2_grpc.WorkflowServiceStub,
                     md: Metadata, sink: FastSink, length: int) -> tuple[float, float]:
    # Waits on the run's watch stream: polling would load the server that the figure should find idle.
    run = (await defs.TriggerWorkflow(W.TriggerWorkflowRequest(slug="chain"), metadata=md)).workflow_run
    async for _ in runs.WatchWorkflowRun(R.WatchWorkflowRunRequest(workflow_run_id=run.id), metadata=md):
        pass
    run = (await runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run.id), metadata=md)).workflow_run
    assert run.status == R.WORKFLOW_RUN_STATUS_COMPLETED, run
    step_runs = {s.step_ref: s for s in
                 (await runs.ListStepRuns(R.ListStepRunsRequest(workflow_run_id=run.id), metadata=md)).step_runs}
    arrivals = [sink.arrivals[step_runs[f"s{i}"].job_run_id] for i in range(length)]
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
    return statistics.median(gaps), gaps[max(0, int(len(gaps) * 0.99) - 1)]


async def dynamic_map(defs: workflow_pb2_grpc.WorkflowServiceStub, runs: workflow_run_pb2_grpc.WorkflowRunServiceStub,
                      md: Metadata, items: int, window: int) -> float:
    """A map over `items` input items, `window` at most at once: instances per second from trigger to
    completed, and the most instances executing at once, sampled from the map's counts meanwhile."""
    step = W.Step(ref="each", job=W.JobStep(job_slug="noop"),
                  map=W.MapSpec(items="input.items", max_concurrency=window))
    slug = f"map-{uuid.uuid4().hex[:8]}"
    await defs.CreateWorkflow(W.CreateWorkflowRequest(workflow=W.Workflow(slug=slug, steps=[step])), metadata=md)
    started = time.perf_counter()
    run = (await defs.TriggerWorkflow(W.TriggerWorkflowRequest(
        slug=slug, input_json=json.dumps({"items": list(range(items))})), metadata=md)).workflow_run
    most = samples = 0
    while run.status == R.WORKFLOW_RUN_STATUS_RUNNING:
        graph = (await runs.GetWorkflowRunGraph(R.GetWorkflowRunGraphRequest(id=run.id), metadata=md)).graph
        counts = graph.nodes[0].map_counts
        most, samples = max(most, counts.started - counts.done), samples + 1
        if graph.status != R.WORKFLOW_RUN_STATUS_RUNNING:
            run = (await runs.GetWorkflowRun(R.GetWorkflowRunRequest(id=run.id), metadata=md)).workflow_run
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    assert run.status == R.WORKFLOW_RUN_STATUS_COMPLETED, run
    assert most <= window, most
    print(f"{f'map over {items:,} items, window {window}':<44} {items / elapsed:,.0f} steps/s ({elapsed:.2f} s; "
          f"at most {most} executing in {samples} samples; {_load()})")
    return items / elapsed


async def plain_runs(jobs: job_pb2_grpc.JobServiceStub, md: Metadata, job: job_pb2.Job, conn: asyncpg.Connection,
                     total: int) -> float:
    """bench_dispatch.py's end-to-end phase on the same server: `total` runs of the same job, triggered in
    batches of 1,000, from the first call to the last run completed. The yardstick for the map's rate."""
    batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(
        payload_json=json.dumps({"i": i})) for i in range(1000)])
    before = await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'")
    started = time.perf_counter()
    for _ in range(total // 1000):
        await jobs.BatchTriggerJob(batch, metadata=md)
    while await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'") < before + total // 1000 * 1000:
        await asyncio.sleep(0.05)
    rate = total // 1000 * 1000 / (time.perf_counter() - started)
    print(f"{f'end-to-end HTTP runs ({total:,}, no workflow)':<44} {rate:,.0f} runs/s ({_load()})")
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fan-out", type=int, default=998)  # with the root and the join: 1,000 steps
    parser.add_argument("--chain", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--map-items", type=int, default=10_000)
    parser.add_argument("--map-window", type=int, default=500)
    args = parser.parse_args()
    sink = FastSink()
    await sink.start()
    async with served("all") as (channel, conn, admin_key, _pid):
        print(f"strait workflow bench, {_load()}")
        # _setup creates the job "noop", which every step runs.
        jobs, md, job = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/noop")
        defs = workflow_pb2_grpc.WorkflowServiceStub(channel)
        runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(channel)
        await chain(defs, runs, md, sink, args.chain, args.repeats)
        await fan_out(defs, runs, run_pb2_grpc.RunServiceStub(channel), md, args.fan_out, args.repeats)
        maps, plain = [], []
        for _ in range(args.repeats):  # interleaved, so that both see the same machine
            maps.append(await dynamic_map(defs, runs, md, args.map_items, args.map_window))
            plain.append(await plain_runs(jobs, md, job, conn, args.map_items))
        print(f"{'map steps/s over plain runs/s (medians)':<44} {statistics.median(maps):,.0f} / "
              f"{statistics.median(plain):,.0f} = {statistics.median(maps) / statistics.median(plain):.2f}")


if __name__ == "__main__":
    os.environ.setdefault("STRAIT_LOG_LEVEL", "warning")
    asyncio.run(main())
