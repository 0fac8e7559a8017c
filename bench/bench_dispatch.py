"""Strait dispatch benchmark: prints trigger RPC rates, batch enqueue rate, end-to-end HTTP runs/s and
idle trigger-to-endpoint latency.

Runs `strait serve --mode all` as a subprocess against a fresh database on a local PostgreSQL and a local
Redis, and a minimal keep-alive HTTP endpoint in this process that answers 200 at once.

    python bench/bench_dispatch.py [--runs 10000] [--latency-samples 300]

STRAIT_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres) names a maintenance
database where a throwaway database is created; STRAIT_BENCH_REDIS_URL defaults to redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strait_client.v1 import job_pb2, job_pb2_grpc, project_pb2, project_pb2_grpc
from strait_server import db

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class SinkProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 to answer keep-alive POSTs: one 200 per request, arrival times by run id."""

    def __init__(self, sink: FastSink) -> None:
        self.sink = sink
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            run_id = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value.strip())
                elif lname == "x-run-id":
                    run_id = value.strip()
            total = head_end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            self.sink.arrived(run_id)
            assert self.transport is not None
            self.transport.write(RESPONSE)


class FastSink:
    def __init__(self) -> None:
        self.count = 0
        self.arrivals: dict[str, float] = {}
        self.track = False
        self.server: asyncio.Server | None = None
        self.port = 0

    def arrived(self, run_id: str) -> None:
        self.count += 1
        if self.track:
            self.arrivals[run_id] = time.perf_counter()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SinkProtocol(self), "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


PROFILE: tuple[str, str, int] | None = None  # (phase, file, pid) for --profile


async def _profile(phase: str) -> None:
    if PROFILE is not None and PROFILE[0] == phase:
        native = ["--native"] if os.environ.get("BENCH_NATIVE") else []  # C extensions and the collector too
        await asyncio.create_subprocess_exec("py-spy", "record", "--pid", str(PROFILE[2]), "--format", "raw",
                                             "-o", PROFILE[1], "--duration", "3", "--rate", "300", *native)


async def _rate(label: str, count: int, fn: Callable[[], Awaitable[None]], phase: str = "") -> float:
    await _profile(phase)
    start = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"{label:<44} {rate:>10,.0f} /s   ({count:,} in {elapsed:.2f}s)", flush=True)
    return rate


def server_env(database_url: str, redis_url: str, namespace: str, port: int, admin_key: str) -> dict[str, str]:
    """The environment of a benchmarked `strait serve` (API rate limits off: they would throttle the figures)."""
    return dict(os.environ, STRAIT_DATABASE_URL=database_url, STRAIT_REDIS_URL=redis_url,
                STRAIT_REDIS_NAMESPACE=namespace, STRAIT_ADDRESS=f"127.0.0.1:{port}", STRAIT_ADMIN_KEY=admin_key,
                STRAIT_JWT_SIGNING_KEY=secrets.token_hex(32), STRAIT_ALLOW_PRIVATE_ENDPOINTS="true",
                STRAIT_LOG_LEVEL="warning", STRAIT_API_RATE_LIMIT="0")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--sequential", type=int, default=2_000)
    parser.add_argument("--concurrent", type=int, default=6_400)
    parser.add_argument("--batch-callers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=30, help="BatchTriggerJob calls of 1,000 runs in all")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--request-ids", action="store_true",
                        help="every call carries a fresh request_id, as the official clients send")
    parser.add_argument("--only-latency", action="store_true")
    parser.add_argument("--split", action="store_true",
                        help="run the api, worker and scheduler roles as three processes (the hint crosses processes)")
    parser.add_argument("--profile", nargs=2, metavar=("PHASE", "FILE"),
                        help="record the server with py-spy for 3 s from the start of PHASE "
                             "(sequential, concurrent, batch, e2e)")
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
    env = server_env(database_url, redis_url, name, port, admin_key)
    modes = ["api", "worker", "scheduler"] if args.split else ["all"]
    servers = [await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode", mode,
                                                    env=env) for mode in modes]
    global PROFILE
    if args.profile:
        PROFILE = (args.profile[0], args.profile[1], servers[1 if args.split else 0].pid)
    print(f"strait bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_load()}; processes: {', '.join(modes)}; "
          f"wake hint via {env.get('STRAIT_WAKE_VIA', 'redis')}")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    conn = await asyncpg.connect(database_url)
    try:
        jobs, md, job = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
        if not args.only_latency:
            await _throughput(args, jobs, md, job, conn, sink)
        await _latency(args, jobs, md, job, sink)
        print(f"done, {_load()}")
    finally:
        await conn.close()
        await channel.close()
        for proc in servers:
            proc.terminate()
            await proc.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


Metadata = tuple[tuple[str, str], ...]


async def _setup(channel: grpc.aio.Channel, admin_key: str,
                 url: str) -> tuple[job_pb2_grpc.JobServiceStub, Metadata, job_pb2.Job]:
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(300):
        try:
            if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == 1:
                break
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    adm = (("authorization", f"Bearer {admin_key}"),)
    projects = project_pb2_grpc.ProjectServiceStub(channel)
    project = (await projects.CreateProject(project_pb2.CreateProjectRequest(slug="bench"), metadata=adm)).project
    key = (await projects.CreateApiKey(project_pb2.CreateApiKeyRequest(project_id=project.id), metadata=adm)).secret
    md = (("authorization", f"Bearer {key}"),)
    jobs = job_pb2_grpc.JobServiceStub(channel)
    job = (await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(slug="noop", endpoint_url=url)),
                                metadata=md)).job
    return jobs, md, job


def each_call(request: Any, fresh_ids: bool) -> Callable[[], Any]:
    """The request to send next: the same one, or (fresh_ids) a copy with a fresh request_id."""
    if not fresh_ids:
        return lambda: request
    own = type(request)()
    own.CopyFrom(request)

    def fresh() -> Any:
        own.request_id = str(uuid.uuid4())  # safe to mutate: the previous call was answered
        return own
    return fresh


async def _throughput(args: argparse.Namespace, jobs: job_pb2_grpc.JobServiceStub, md: Metadata,
                      job: job_pb2.Job, conn: asyncpg.Connection, sink: FastSink) -> None:
    later = Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    # Delayed runs measure the API and enqueue path alone, without dispatch competing for the CPU.
    delayed = job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(
        payload_json='{"n": 1}', scheduled_time=later))
    await jobs.TriggerJob(delayed, metadata=md)  # warm up

    async def sequential() -> None:
        next_request = each_call(delayed, args.request_ids)
        for _ in range(args.sequential):
            await jobs.TriggerJob(next_request(), metadata=md)

    async def callers(count: int, calls: int, request: object, method: Callable[..., Awaitable[object]]) -> None:
        async def caller() -> None:
            next_request = each_call(request, args.request_ids)
            for _ in range(calls):
                await method(next_request(), metadata=md)
        await asyncio.gather(*(caller() for _ in range(count)))

    batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(
        payload_json=json.dumps({"i": i}), scheduled_time=later) for i in range(1000)])
    per_batch_caller = args.batches // args.batch_callers
    await _rate("TriggerJob, sequential", args.sequential, sequential, "sequential")
    await _rate("TriggerJob, 32 concurrent callers", args.concurrent // 32 * 32,
                lambda: callers(32, args.concurrent // 32, delayed, jobs.TriggerJob), "concurrent")
    await _rate(f"BatchTriggerJob enqueue (1,000 per call, {args.batch_callers} callers)",
                per_batch_caller * args.batch_callers * 1000,
                lambda: callers(args.batch_callers, per_batch_caller, batch, jobs.BatchTriggerJob), "batch")
    # The delayed runs stay delayed (due in an hour): canceling 36,000 rows here would hand the
    # end-to-end phase a vacuum of the runs table to compete with.

    if args.skip_e2e:
        return
    # End to end: enqueue everything at once, then wait until every run has completed.
    e2e = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(
        payload_json=json.dumps({"i": i})) for i in range(1000)])
    total = args.runs // 1000 * 1000
    before = sink.count

    async def end_to_end() -> None:
        for _ in range(total // 1000):
            await jobs.BatchTriggerJob(e2e, metadata=md)
        while await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'") < total:
            await asyncio.sleep(0.05)
    await _rate(f"end-to-end HTTP runs ({total:,}, trigger to completed)", total, end_to_end, "e2e")
    assert sink.count - before == total, (sink.count, before)


async def _latency(args: argparse.Namespace, jobs: job_pb2_grpc.JobServiceStub, md: Metadata,
                   job: job_pb2.Job, sink: FastSink) -> None:
    """Idle latency: one trigger at a time, from the call to the request reaching the endpoint."""
    sink.track = True
    latencies = []
    rpc = []
    request = job_pb2.TriggerJobRequest(id=job.id, options=job_pb2.RunOptions(payload_json='{"l": 1}'))
    for _ in range(args.latency_samples):
        await asyncio.sleep(0.02)
        if args.request_ids:
            request.request_id = str(uuid.uuid4())
        start = time.perf_counter()
        run = (await jobs.TriggerJob(request, metadata=md)).run
        rpc.append((time.perf_counter() - start) * 1000)
        while run.id not in sink.arrivals:
            await asyncio.sleep(0.0002)
        latencies.append((sink.arrivals[run.id] - start) * 1000)
    print(f"{'  (TriggerJob call alone, idle)':<44} p50 {statistics.median(rpc):.2f} ms")
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"{'idle trigger-to-endpoint latency':<44} p50 {p50:.2f} ms   p99 {p99:.2f} ms "
          f"({len(latencies)} samples)")


if __name__ == "__main__":
    asyncio.run(main())
