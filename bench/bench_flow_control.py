"""Flow-control benchmark (issue 4).

    python bench/bench_flow_control.py keys [--runs 10000] [--keys 1000]
        End-to-end HTTP runs/s through `strait serve --mode all` for a job without limits, then for a job
        with max_concurrency_per_key=1 and runs spread over --keys concurrency keys (target: >= 70%).
    python bench/bench_flow_control.py slots [--runs 100] [--limit 5]
        A job with max_concurrency=--limit and runs of 50-150 ms each (target: its slots >= 90% busy, that is
        the sum of the runs' durations / limit over the time from the trigger to the last completion).
    python bench/bench_flow_control.py claim [--deep 1000000] [--shallow 10000]
        Mean time of one claim of 100 runs (the plain claim, and the gated claim over 1,000 keys) with
        --shallow and with --deep runs queued (target: the deep cost within 25% of the shallow one); also the
        gated claim of one rate-limited job (the limit never binds: the cost of the shared window row).

Same environment variables as bench_dispatch.py: STRAIT_BENCH_DATABASE_URL (a maintenance database on a
local PostgreSQL, where throwaway databases are created) and STRAIT_BENCH_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import FastSink, _free_port, _load, _setup, _with_db, server_env
from strait_client.v1 import job_pb2
from strait_server import db
from strait_server.dispatch.gates import GatedClaimer
from strait_server.queue import Queue

ADMIN_URL = os.environ.get("STRAIT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("STRAIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    name = f"strait_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(ADMIN_URL, name)
    try:
        await db.apply_migrations(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def served(mode: str = "all", options: list[tuple[str, int]] | None = None,
                 port: int = 0) -> AsyncIterator[
        tuple[grpc.aio.Channel, asyncpg.Connection, str, int]]:
    """`strait serve --mode MODE` on a throwaway database: a channel to it, a connection to the database, the
    admin key and the server's pid (listening on `port`, or on a free one). Stopped at the end."""
    async with _database() as database_url:
        port = port or _free_port()
        admin_key = secrets.token_hex(16)
        env = server_env(database_url, REDIS_URL, database_url.rsplit("/", 1)[1], port, admin_key)
        server = await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode",
                                                      mode, env=env)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        conn = await asyncpg.connect(database_url)
        try:
            yield channel, conn, admin_key, server.pid
        finally:
            await conn.close()
            await channel.close()
            server.terminate()
            await server.wait()


async def keys(args: argparse.Namespace) -> None:
    sink = FastSink()
    await sink.start()
    async with served() as (channel, conn, admin_key, _):
        print(f"strait flow-control bench (keys), {_load()}")
        jobs, md, plain = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
        keyed = (await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
            slug="keyed", endpoint_url=f"http://127.0.0.1:{sink.port}/run", max_concurrency_per_key=1)),
            metadata=md)).job
        total = args.runs // 1000 * 1000
        rates = {}
        for label, job, key_count in (("no limit", plain, 0), (f"{args.keys:,} keys, 1 per key", keyed,
                                                               args.keys)):
            batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(
                payload_json=json.dumps({"i": i}),
                concurrency_key=f"k{i % key_count}" if key_count else "") for i in range(1000)])
            done_before = await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'")
            start = time.perf_counter()
            for _ in range(total // 1000):
                await jobs.BatchTriggerJob(batch, metadata=md)
            while (await conn.fetchval("SELECT count(*) FROM runs WHERE status = 'completed'")
                   - done_before) < total:
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            rates[label] = total / elapsed
            print(f"end-to-end, {label:<24} {rates[label]:>8,.0f} runs/s ({total:,} in {elapsed:.2f}s)",
                  flush=True)
        ratio = rates[f"{args.keys:,} keys, 1 per key"] / rates["no limit"]
        print(f"keyed / unconstrained: {ratio:.0%} (target >= 70%); {_load()}")


async def slots(args: argparse.Namespace) -> None:
    from aiohttp import web

    seen: list[float] = []  # when each request arrived and each answer left, for the busy span

    async def work(request: web.Request) -> web.Response:
        seen.append(time.perf_counter())
        await asyncio.sleep((await request.json())["ms"] / 1000)
        seen.append(time.perf_counter())
        return web.json_response({"ok": True})

    sink = web.Application()
    sink.router.add_post("/work", work)
    runner = web.AppRunner(sink, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with served() as (channel, conn, admin_key, _):
        print(f"strait flow-control bench (slots), {_load()}")
        try:
            jobs, md, _ = await _setup(channel, admin_key, f"http://127.0.0.1:{sink_port}/work")
            job = (await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
                slug="limited", endpoint_url=f"http://127.0.0.1:{sink_port}/work", max_concurrency=args.limit)),
                metadata=md)).job
            rng = random.Random(1)
            durations = [rng.randint(50, 150) for _ in range(args.runs)]
            start = time.perf_counter()
            await jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=[
                job_pb2.RunOptions(payload_json=json.dumps({"ms": ms})) for ms in durations]), metadata=md)
            while await conn.fetchval("SELECT count(*) FROM runs WHERE job_id = $1 AND status = 'completed'",
                                      job.id) < args.runs:
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
            span = max(seen) - min(seen)  # from the first start to the last answer
            ideal = sum(durations) / 1000 / args.limit
            print(f"{args.runs} runs of 50-150 ms, max_concurrency={args.limit}: first start to last answer "
                  f"{span:.2f}s, trigger to last completion {elapsed:.2f}s, all slots busy {ideal:.2f}s")
            print(f"slots busy {ideal / span:.0%} (target >= 90%), {ideal / elapsed:.0%} counting the trigger and "
                  f"the last settle; {_load()}")
        finally:
            await runner.cleanup()


FILL = """
WITH j AS (SELECT * FROM jobs WHERE id = $1), ins AS (
    INSERT INTO runs (id, project_id, job_id, status, max_attempts, timeout_ms, concurrency_key)
    SELECT 'run_b' || $3 || '_' || g, j.project_id, j.id, 'queued', 3, 60000,
        CASE WHEN $4 > 0 THEN 'k' || (g % $4) ELSE '' END
    FROM j, generate_series(1, $2) AS g
    RETURNING id, job_id, priority, run_at, concurrency_key
)
INSERT INTO run_queue (run_id, job_id, priority, run_at, gate)
SELECT ins.id, ins.job_id, ins.priority, ins.run_at, strait_gate(j.id, ins.concurrency_key, j.max_concurrency,
    j.max_concurrency_per_key, j.rate_limit_max, j.execution_window_cron)
FROM ins, j
"""


async def claim(args: argparse.Namespace) -> None:
    print(f"strait flow-control bench (claim cost), {_load()}")
    results: dict[tuple[str, int], float] = {}
    for depth in (args.shallow, args.deep):
        async with _database() as url:
            pool = await db.create_pool(url, min_size=2, max_size=4)
            await pool.execute("INSERT INTO projects (id, slug, name) VALUES ('p', 'p', 'p')")
            await pool.execute("INSERT INTO jobs (id, project_id, slug, name, endpoint_url) VALUES "
                               "('job_plain', 'p', 'plain', 'plain', 'http://127.0.0.1:9/'), "
                               "('job_keyed', 'p', 'keyed', 'keyed', 'http://127.0.0.1:9/'), "
                               "('job_rated', 'p', 'rated', 'rated', 'http://127.0.0.1:9/')")
            await pool.execute("UPDATE jobs SET max_concurrency_per_key = 1000000 WHERE id = 'job_keyed'")
            # A rate limit that never binds: what keeping the shared window (a PostgreSQL row) costs a claim.
            await pool.execute("UPDATE jobs SET rate_limit_max = 100000000, rate_limit_window_ms = 1000 "
                               "WHERE id = 'job_rated'")
            fill_start = time.perf_counter()
            for chunk in range(0, depth, 100_000):
                n = min(100_000, depth - chunk)
                await pool.execute(FILL, "job_plain", n, f"p{chunk}", 0)
                await pool.execute(FILL, "job_keyed", n, f"k{chunk}", 1000)
                if chunk == 0:
                    await pool.execute(FILL, "job_rated", min(n, 10_000), f"r{chunk}", 0)
            await pool.execute("VACUUM ANALYZE runs, run_queue")
            print(f"{depth:>9,} queued per job, filled in {time.perf_counter() - fill_start:.1f}s", flush=True)
            queue, gated = Queue(pool), GatedClaimer(pool)
            await pool.execute("UPDATE jobs SET enabled = false WHERE id = 'job_rated'")
            for label, fn in (("plain claim", lambda q=queue: q.claim("bench", 100)),
                              ("gated claim, 1,000 keys", lambda g=gated: _gated(g))):
                await fn()  # warm up
                times = []
                for _ in range(args.claims):
                    start = time.perf_counter()
                    got = await fn()
                    times.append((time.perf_counter() - start) * 1000)
                    assert len(got) == 100, len(got)
                results[(label, depth)] = statistics.mean(times)
                print(f"  {label:<26} mean {statistics.mean(times):7.2f} ms  p50 "
                      f"{statistics.median(times):7.2f} ms per 100 runs", flush=True)
            # The same gated claim for one job whose rate limit never binds (its window row read and saved).
            await pool.execute("UPDATE jobs SET enabled = (id = 'job_rated')")
            await pool.execute("DELETE FROM run_queue WHERE job_id <> 'job_rated'")
            await pool.execute("DELETE FROM run_leases")
            rated = []
            for _ in range(min(args.claims, 90)):
                start = time.perf_counter()
                got = await _gated(gated)
                rated.append((time.perf_counter() - start) * 1000)
                assert len(got) == 100, len(got)
            print(f"  {'gated claim, rate limit':<26} mean {statistics.mean(rated):7.2f} ms  p50 "
                  f"{statistics.median(rated):7.2f} ms per 100 runs", flush=True)
            await pool.close()
    for label in ("plain claim", "gated claim, 1,000 keys"):
        ratio = results[(label, args.deep)] / results[(label, args.shallow)]
        print(f"{label}: {args.deep:,} queued costs {ratio:.2f}x of {args.shallow:,} (target <= 1.25x)")
    print(f"done, {_load()}")


async def _gated(gated: GatedClaimer) -> list[object]:
    return list((await gated.claim("bench", 100)).runs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keys")
    k.add_argument("--runs", type=int, default=10_000)
    k.add_argument("--keys", type=int, default=1_000)
    sl = sub.add_parser("slots")
    sl.add_argument("--runs", type=int, default=100)
    sl.add_argument("--limit", type=int, default=5)
    c = sub.add_parser("claim")
    c.add_argument("--deep", type=int, default=1_000_000)
    c.add_argument("--shallow", type=int, default=10_000)
    c.add_argument("--claims", type=int, default=50)
    args = parser.parse_args()
    await {"keys": keys, "slots": slots, "claim": claim}[args.what](args)


if __name__ == "__main__":
    asyncio.run(main())
