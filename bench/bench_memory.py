"""Server memory under a burst of large batches.

    python bench/bench_memory.py [--batches 60] [--runs 1000] [--payload 7000] [--keys 6] [--connections 1]

Starts `strait serve --mode api` on a throwaway database, then sends --batches BatchTriggerJob calls of --runs
runs with --payload-byte payloads (60 x 1,000 x 7 KB: 7 MB each) all at once, spread over --keys API keys. A
call refused with RESOURCE_EXHAUSTED is sent again after its RetryInfo delay, as a client would, until every
batch is in. Prints the server's resident memory before, at its peak (sampled every 20 ms) and after, and
how many calls were refused (target: peak RSS <= 300 MB).

Same environment variables as bench_dispatch.py: STRAIT_BENCH_DATABASE_URL, STRAIT_BENCH_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import psutil
from google.rpc import error_details_pb2
from grpc_status import rpc_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import _load, _setup
from bench.bench_flow_control import _free_port, served
from strait_client.v1 import job_pb2, job_pb2_grpc, project_pb2, project_pb2_grpc

MB = 1024 * 1024


def _retry_delay(err: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return 1.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--payload", type=int, default=7000)
    parser.add_argument("--keys", type=int, default=6)
    parser.add_argument("--connections", type=int, default=1, help="the batches are spread over this many")
    args = parser.parse_args()
    options = [("grpc.max_send_message_length", 16 * MB), ("grpc.max_receive_message_length", 16 * MB)]
    port = _free_port()
    async with served("api", options, port) as (channel, _, admin_key, pid):
        # Distinct channel arguments make distinct connections to one address.
        extra = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[*options, ("strait.bench.connection", i)])
                 for i in range(1, args.connections)]
        stubs = [job_pb2_grpc.JobServiceStub(c) for c in (channel, *extra)]
        print(f"strait memory bench, {_load()}")
        _, md, job = await _setup(channel, admin_key, "https://example.com/hook")
        projects = project_pb2_grpc.ProjectServiceStub(channel)
        keys = [md] + [(("authorization", "Bearer " + (await projects.CreateApiKey(
            project_pb2.CreateApiKeyRequest(project_id=job.project_id, name=f"k{i}"),
            metadata=(("authorization", f"Bearer {admin_key}"),))).secret),) for i in range(args.keys - 1)]
        proc = psutil.Process(pid)
        before = proc.memory_info().rss
        payload = '{"blob": "' + "x" * max(0, args.payload - 12) + '"}'
        request = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
            job_pb2.RunOptions(payload_json=payload) for _ in range(args.runs)])
        print(f"{args.batches} batches of {args.runs} runs, {request.ByteSize() / MB:.1f} MB each, "
              f"over {args.keys} keys and {len(stubs)} connections")
        peak, refused = before, 0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss)
                await asyncio.sleep(0.02)

        async def send(i: int) -> None:
            nonlocal refused
            while True:
                try:
                    await stubs[i % len(stubs)].BatchTriggerJob(request, metadata=keys[i % len(keys)])
                    return
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    refused += 1
                    await asyncio.sleep(_retry_delay(err))

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(args.batches)))
        elapsed = time.perf_counter() - started
        done.set()
        await sampler
        after = proc.memory_info().rss
        for c in extra:
            await c.close()
        print(f"all {args.batches * args.runs:,} runs in after {elapsed:.1f}s; {refused} calls refused and sent "
              f"again")
        print(f"server RSS: before {before / MB:.0f} MB, peak {peak / MB:.0f} MB (target <= 300), after "
              f"{after / MB:.0f} MB; {_load()}")


if __name__ == "__main__":
    os.environ.setdefault("STRAIT_LOG_LEVEL", "warning")
    asyncio.run(main())
