"""Console page times with a large project: how long each list page and the overview take to answer.

    python bench/bench_console.py [--runs 100000] [--completed 2000] [--repeat 7]

Starts `strait serve --mode all` with the console on a free port against a fresh database, with a local HTTP
endpoint answering 200. Seeds one project with --completed runs dispatched to the endpoint (so the overview
has waits and attempt durations to show) and --runs runs due tomorrow (BatchTriggerJob calls of 1,000 with a
future scheduled_time: nothing dispatches them). Then signs in to the console over HTTP and requests every
list page (the console's routes without a path parameter, plus filtered run lists) --repeat times one after
another, after one warm-up request, and prints the median and the slowest answer of each with the machine's
load average; then the same for the GetRunStats call the overview makes, alone. Times are measured by the
client on the loopback interface, so they are the server's time to answer plus a fraction of a millisecond.

Same environment variables as bench_dispatch.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import FastSink, _free_port, _load, _setup, server_env
from bench.bench_flow_control import REDIS_URL, _database
from strait_client.v1 import job_pb2, job_pb2_grpc, run_pb2, run_pb2_grpc
from strait_server.console import pages

Metadata = tuple[tuple[str, str], ...]
FILTERED = ("/runs?status=delayed", "/runs?status=completed", "/runs?job=bulk", "/runs?job=noop",
            "/runs?tags=region%3Deu", "/workflow-runs?status=completed")


def list_pages() -> list[str]:
    router = web.UrlDispatcher()
    pages.register(router)
    paths = {r.resource.canonical for r in router.routes() if r.method == "GET" and r.resource is not None}
    plain = sorted(p for p in paths if "{" not in p and p not in ("/", "/projects") and not p.startswith("/live/"))
    return [*plain, *FILTERED]


async def seed(jobs: job_pb2_grpc.JobServiceStub, md: Metadata, noop: job_pb2.Job, runs: int,
               completed: int, sink: FastSink) -> None:
    start = time.perf_counter()
    done = job_pb2.BatchTriggerJobRequest(id=noop.id, runs=[job_pb2.RunOptions(payload_json='{"n": 1}')] * 1000)
    for _ in range(completed // 1000):
        await jobs.BatchTriggerJob(done, metadata=md)
    while sink.count < completed // 1000 * 1000:
        await asyncio.sleep(0.05)
    bulk = (await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
        slug="bulk", endpoint_url=f"http://127.0.0.1:{sink.port}/bulk")), metadata=md)).job
    tomorrow = Timestamp()
    tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    delayed = job_pb2.BatchTriggerJobRequest(id=bulk.id, runs=[job_pb2.RunOptions(
        payload_json='{"n": 1}', scheduled_time=tomorrow)] * 1000)
    for _ in range(runs // 1000):
        await jobs.BatchTriggerJob(delayed, metadata=md, timeout=60)
    print(f"seeded {completed // 1000 * 1000:,} completed and {runs // 1000 * 1000:,} delayed runs in "
          f"{time.perf_counter() - start:.1f} s")


async def sign_in(http: aiohttp.ClientSession, base: str, key: str) -> None:
    for _ in range(300):
        try:
            async with http.get(base + "/healthz") as response:
                if response.status == 200:
                    break
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    async with http.get(base + "/signin") as response:
        found = re.search(r'name="csrf_token" value="([^"]+)"', await response.text())
        assert found, "no sign-in form"
    async with http.post(base + "/signin", data={"csrf_token": found.group(1), "api_key": key},
                         headers={"Origin": base}, allow_redirects=False) as response:
        assert response.status == 303, await response.text()


async def measure(http: aiohttp.ClientSession, base: str, path: str, repeat: int) -> list[float]:
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        async with http.get(base + path, allow_redirects=False) as response:
            await response.read()
            assert response.status == 200, (path, response.status)
        if i:  # the first request warms caches
            times.append(time.perf_counter() - start)
    return times


def report(what: str, times: list[float]) -> None:
    print(f"{what:32} {statistics.median(times) * 1000:8.1f} ms {max(times) * 1000:8.1f} ms")


async def measure_stats(runs: run_pb2_grpc.RunServiceStub, md: Metadata, repeat: int) -> list[float]:
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        await runs.GetRunStats(run_pb2.GetRunStatsRequest(), metadata=md)
        if i:
            times.append(time.perf_counter() - start)
    return times


@asynccontextmanager
async def console_server() -> AsyncIterator[tuple[grpc.aio.Channel, asyncio.subprocess.Process, FastSink, str, str]]:
    """`strait serve --mode all` with the console on a free port, against a fresh database, and a local HTTP
    endpoint answering 200: (channel to the server, its process, the endpoint, the console's URL, admin key)."""
    async with _database() as database_url:
        sink = FastSink()
        await sink.start()
        port, console_port = _free_port(), _free_port()
        admin_key = secrets.token_hex(16)
        env = server_env(database_url, REDIS_URL, database_url.rsplit("/", 1)[1], port, admin_key)
        env["STRAIT_CONSOLE_ADDRESS"] = f"127.0.0.1:{console_port}"
        server = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode",
                                                      "all", env=env)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield channel, server, sink, f"http://127.0.0.1:{console_port}", admin_key
        finally:
            await channel.close()
            server.terminate()
            await server.wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000, help="runs due tomorrow (multiple of 1,000)")
    parser.add_argument("--completed", type=int, default=2_000, help="runs dispatched first (multiple of 1,000)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    async with console_server() as (channel, _server, sink, base, admin_key):
        jobs, md, noop = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
        await seed(jobs, md, noop, args.runs, args.completed, sink)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await sign_in(http, base, md[0][1].removeprefix("Bearer "))
            print(f"strait console bench, {_load()}")
            print(f"{'page':32} {'median':>10} {'slowest':>10}")
            for path in list_pages():
                report(path, await measure(http, base, path, args.repeat))
            report("GetRunStats (gRPC)", await measure_stats(run_pb2_grpc.RunServiceStub(channel), md, args.repeat))
            print(f"after: {_load()}")


if __name__ == "__main__":
    asyncio.run(main())
