"""Strait watch-stream benchmark: prints events/s delivered to concurrent feed watchers while runs flow,
event latency from transition to watcher at idle (p50/p99), and server memory with idle streams open.

    python bench/bench_events.py [--watchers 100] [--runs 2000] [--idle-streams 1000]

Runs `strait serve --mode all` as a subprocess against a throwaway database on a local PostgreSQL and a local
Redis (STRAIT_BENCH_DATABASE_URL, STRAIT_BENCH_REDIS_URL as in bench_dispatch.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dispatch import FastSink, _free_port, _load, _setup, _with_db

from strait_client.v1 import job_pb2, run_pb2, run_pb2_grpc
from strait_server import db


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _fan_out(runs_stub: run_pb2_grpc.RunServiceStub, jobs: object, md: tuple[tuple[str, str], ...],
                   job: job_pb2.Job, watchers: int, runs: int) -> None:
    delivered = 0
    target = runs * 3  # queued, executing, completed
    done = asyncio.Event()
    ready = []

    async def watcher() -> None:
        nonlocal delivered
        call = runs_stub.WatchRuns(run_pb2.WatchRunsRequest(job_id=job.id), metadata=md)
        await call.initial_metadata()
        ready.append(1)
        seen = 0
        async for message in call:
            if message.WhichOneof("message") == "event":
                seen += 1
                delivered += 1
                if seen == target:
                    break
        call.cancel()

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    while len(ready) < watchers:
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(payload_json=json.dumps({"i": i}))
                                                            for i in range(min(runs, 1000))])
    for _ in range(max(runs // 1000, 1)):
        await jobs.BatchTriggerJob(batch, metadata=md)  # type: ignore[attr-defined]
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    done.set()
    print(f"{'events delivered to ' + str(watchers) + ' feed watchers':<44} {delivered / elapsed:>10,.0f} /s   "
          f"({delivered:,} in {elapsed:.2f}s, {runs:,} runs)", flush=True)


async def _latency(runs_stub: run_pb2_grpc.RunServiceStub, jobs: object, md: tuple[tuple[str, str], ...],
                   job: job_pb2.Job, samples: int) -> None:
    call = runs_stub.WatchRuns(run_pb2.WatchRunsRequest(job_id=job.id), metadata=md)
    await call.initial_metadata()
    latencies: list[float] = []
    request = job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(payload_json="{}"))

    async def consume() -> None:
        async for message in call:
            if message.WhichOneof("message") == "event":
                made = message.event.create_time.ToDatetime(tzinfo=UTC).timestamp()
                latencies.append((time.time() - made) * 1000)

    reader = asyncio.create_task(consume())
    for _ in range(samples):
        await asyncio.sleep(0.02)
        await jobs.TriggerJob(request, metadata=md)  # type: ignore[attr-defined]
    while len(latencies) < samples * 3:
        await asyncio.sleep(0.01)
    call.cancel()
    reader.cancel()
    latencies.sort()
    print(f"{'event latency, transition to feed watcher':<44} p50 {statistics.median(latencies):.2f} ms   "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms ({len(latencies)} events, idle)", flush=True)


async def _idle_memory(runs_stub: run_pb2_grpc.RunServiceStub, jobs: object, md: tuple[tuple[str, str], ...],
                       job: job_pb2.Job, streams: int, pid: int) -> None:
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    resp = await jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(  # type: ignore[attr-defined]
        id=job.id, runs=[job_pb2.RunOptions(scheduled_time=later)] * min(streams, 1000)), metadata=md)
    before = _rss_kib(pid)
    calls = []
    for i in range(streams):
        call = runs_stub.WatchRun(run_pb2.WatchRunRequest(run_id=resp.runs[i % len(resp.runs)].id), metadata=md)
        calls.append(call)
    for call in calls:
        await call.initial_metadata()
    await asyncio.sleep(1.0)  # let allocations settle before reading RSS
    after = _rss_kib(pid)
    print(f"{'server memory with ' + str(streams) + ' idle WatchRun streams':<44} +{(after - before) / 1024:.1f} MiB "
          f"({(after - before) * 1024 / streams / 1024:.1f} KiB per stream; RSS {after / 1024:.0f} MiB)", flush=True)
    for call in calls:
        call.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--idle-streams", type=int, default=1000)
    args = parser.parse_args()
    admin_url = os.environ.get("STRAIT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("STRAIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"strait_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = _with_db(admin_url, name)
    await db.apply_migrations(database_url)
    sink = FastSink()
    await sink.start()
    port = _free_port()
    admin_key = secrets.token_hex(16)
    env = dict(os.environ, STRAIT_DATABASE_URL=database_url, STRAIT_REDIS_URL=redis_url,
               STRAIT_REDIS_NAMESPACE=name, STRAIT_ADDRESS=f"127.0.0.1:{port}", STRAIT_ADMIN_KEY=admin_key,
               STRAIT_JWT_SIGNING_KEY=secrets.token_hex(32), STRAIT_ALLOW_PRIVATE_ENDPOINTS="true",
               STRAIT_LOG_LEVEL="warning", STRAIT_API_RATE_LIMIT="0",
               STRAIT_WATCH_MAX_STREAMS_PER_PROJECT=str(args.idle_streams + 200))
    server = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", env=env)
    print(f"strait events bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_load()}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        jobs, md, job = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
        runs_stub = run_pb2_grpc.RunServiceStub(channel)
        await _latency(runs_stub, jobs, md, job, args.latency_samples)
        await _fan_out(runs_stub, jobs, md, job, args.watchers, args.runs)
        await _idle_memory(runs_stub, jobs, md, job, args.idle_streams, server.pid)
        print(f"done, {_load()}")
    finally:
        await channel.close()
        server.terminate()
        await server.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
