"""Worker plane benchmark: drain a backlog of no-op worker runs with one SDK worker process, next to the raw
batched-claim limit of the same database; and the idle latency from a trigger's return to the handler's start.

    python bench/bench_workers.py [--runs 200000] [--slots 1000] [--repeats 3] [--latency 1000] [--curve 100,1000]

Runs `strait serve --mode all` on a throwaway database (as bench_dispatch.py does). The backlog is enqueued
with BatchTriggerJob before the worker starts; the worker (a separate process running strait_client.Worker
with an async no-op handler) is timed from its start to the last run completed, which includes its connect.
The raw limit claims the same number of rows of a plain table in batches of 1,000 with one statement per
batch (`UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1000)`), the most any claim-based
queue could do on this machine. Environment: STRAIT_BENCH_DATABASE_URL, STRAIT_BENCH_REDIS_URL. `--pg-stats`
prints what each drain cost PostgreSQL (see bench/pg_stats.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
import grpc

from bench.bench_dispatch import _free_port, _load, _setup
from bench.bench_flow_control import ADMIN_URL, served
from bench.cpu_time import CpuMeter
from bench.pg_stats import PgStats
from strait_client.v1 import job_pb2, job_pb2_grpc, project_pb2, project_pb2_grpc, worker_pb2, worker_pb2_grpc

WORKER_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, time
    from strait_client import Worker
    worker = Worker(os.environ["STRAIT_ADDRESS"], os.environ["STRAIT_API_KEY"], slots=int(sys.argv[1]))
    mode = sys.argv[2]

    if mode == "noop":  # the job named by the third argument
        @worker.handler(sys.argv[3])
        async def noop(ctx, payload):
            return None
    elif mode == "echo":  # print when each handler starts
        @worker.handler("echo-worker")
        async def echo(ctx, payload):
            print(ctx.run_id, time.time(), flush=True)
    elif mode == "block":  # hold every run until killed
        @worker.handler("block-worker")
        async def block(ctx, payload):
            print(ctx.run_id, time.time(), flush=True)
            await asyncio.Event().wait()
    else:  # "report": print when each handler starts, then end the run
        @worker.handler("block-worker")
        async def report(ctx, payload):
            print(ctx.run_id, time.time(), flush=True)

    worker.run()
""")


async def _worker_job(jobs: job_pb2_grpc.JobServiceStub, md: tuple[tuple[str, str], ...], slug: str,
                      max_concurrency: int = 0) -> job_pb2.Job:
    reply = await jobs.CreateJob(job_pb2.CreateJobRequest(job=job_pb2.Job(
        slug=slug, execution_mode=job_pb2.EXECUTION_MODE_WORKER, max_concurrency=max_concurrency)), metadata=md)
    created: job_pb2.Job = reply.job
    return created


async def _enqueue(jobs: job_pb2_grpc.JobServiceStub, md: tuple[tuple[str, str], ...], job: job_pb2.Job,
                   count: int) -> None:
    batch = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions() for _ in range(1000)])
    for _ in range(count // 1000):
        await jobs.BatchTriggerJob(batch, metadata=md, timeout=60)


async def _start_worker(address: str, key: str, slots: int, mode: str, slug: str = "") -> asyncio.subprocess.Process:
    env = {**os.environ, "STRAIT_ADDRESS": address, "STRAIT_API_KEY": key}
    return await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER_SCRIPT, str(slots), mode, slug, env=env,
                                                stdout=None if mode == "noop" else asyncio.subprocess.PIPE)


async def _lines(proc: asyncio.subprocess.Process, count: int, within_s: float) -> list[tuple[str, float]]:
    assert proc.stdout is not None
    out = []
    for _ in range(count):
        run_id, at = (await asyncio.wait_for(proc.stdout.readline(), within_s)).decode().split()
        out.append((run_id, float(at)))
    return out


async def _disconnect(address: str, key: str, jobs: job_pb2_grpc.JobServiceStub,
                      md: tuple[tuple[str, str], ...]) -> float:
    """Seconds from SIGKILL of a worker holding 100 runs to the last of them starting on a second worker."""
    job = await _worker_job(jobs, md, "block-worker")
    first = await _start_worker(address, key, 100, "block")
    await jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(
        id=job.id, runs=[job_pb2.RunOptions() for _ in range(100)]), metadata=md)
    held = {run_id for run_id, _ in await _lines(first, 100, 30)}
    second = await _start_worker(address, key, 100, "report")
    await asyncio.sleep(2)  # connected, and idle: nothing is queued
    killed = time.time()
    first.kill()
    await first.wait()
    try:
        started = await _lines(second, 100, 30)
    finally:
        second.terminate()
        await second.wait()
    assert {run_id for run_id, _ in started} == held
    return max(at for _, at in started) - killed


async def _drain(conn: asyncpg.Connection, args: argparse.Namespace, address: str, key: str,
                 jobs: job_pb2_grpc.JobServiceStub, md: tuple[tuple[str, str], ...], job: job_pb2.Job,
                 server_pid: int) -> tuple[float, dict[str, float]]:
    """Runs/s, and the CPU seconds per run that the server, the worker and PostgreSQL spent on the drain."""
    await _enqueue(jobs, md, job, args.runs)
    stats = None
    if args.pg_stats:
        stats = PgStats(await asyncpg.connect(ADMIN_URL), conn)
        await stats.start()
    meter = CpuMeter(conn, {"server": server_pid})
    await meter.start()
    started = time.perf_counter()
    worker = await _start_worker(address, key, args.slots, "noop", job.slug)
    meter.add("worker", worker.pid)
    try:
        # Done when no run of the job is queued or leased. Cheaper to ask than counting completed runs, but
        # not free (the lease table has no index by job, and both tables hold dead rows until vacuumed: about
        # 1 ms), and PostgreSQL's CPU is part of what the bench measures: every 50 ms (at 20 ms, and asked
        # by job_id in run_queue too, it cost 6 us of PostgreSQL's CPU per run).
        # (A flow-controlled job's runs wait under 'w/<queue>/<job id>/'.)
        gate = f"w/{job.queue or 'default'}/{job.id}" + ("/" if job.max_concurrency else "")
        while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM run_queue WHERE gate = $2) "
                                  "OR EXISTS (SELECT 1 FROM run_leases WHERE job_id = $1)", job.id, gate):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        spent = await meter.stop()
    finally:
        worker.terminate()
        await worker.wait()
    if stats is not None:
        try:
            print(await stats.report(args.runs))
        finally:
            await stats.admin.close()
    left = await conn.fetchval("SELECT count(*) FROM runs WHERE job_id = $1 AND status <> 'completed'", job.id)
    assert left == 0, left
    return float(args.runs) / elapsed, {name: seconds / args.runs for name, seconds in spent.items()}


async def _raw_claim_limit(conn: asyncpg.Connection, rows: int) -> float:
    await conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw (id bigint PRIMARY KEY, status text, "
                       "priority int, run_at timestamptz, owner text)")
    await conn.execute("TRUNCATE bench_raw")
    await conn.execute("INSERT INTO bench_raw SELECT g, 'queued', 0, now(), NULL FROM generate_series(1, $1) g",
                       rows)
    await conn.execute("CREATE INDEX IF NOT EXISTS bench_raw_q ON bench_raw (priority DESC, run_at, id) "
                       "WHERE status = 'queued'")
    await conn.execute("ANALYZE bench_raw")
    claim = ("UPDATE bench_raw SET status = 'executing', owner = 'x' WHERE id IN (SELECT id FROM bench_raw "
             "WHERE status = 'queued' ORDER BY priority DESC, run_at, id LIMIT 1000 FOR UPDATE SKIP LOCKED) "
             "RETURNING id")
    started = time.perf_counter()
    claimed = 0
    while claimed < rows:
        got = len(await conn.fetch(claim))
        if not got:
            break
        claimed += got
    return claimed / (time.perf_counter() - started)


async def _latency(args: argparse.Namespace, address: str, key: str, jobs: job_pb2_grpc.JobServiceStub,
                   md: tuple[tuple[str, str], ...]) -> tuple[float, float]:
    job = await _worker_job(jobs, md, "echo-worker")
    worker = await _start_worker(address, key, 100, "echo")
    try:
        await asyncio.sleep(2)  # connected (the first trigger would otherwise wait for the hello)
        gaps, whole = [], []
        for _ in range(args.latency):
            called = time.time()
            run = (await jobs.TriggerJob(job_pb2.TriggerJobRequest(id=job.id), metadata=md)).run
            returned = time.time()
            [(run_id, at)] = await _lines(worker, 1, 10)
            assert run_id == run.id, run_id
            # Negative when the handler started before the answer reached the caller (the run is assigned
            # before the answer is sent).
            gaps.append((at - returned) * 1000)
            whole.append((at - called) * 1000)
        gaps.sort()
        whole.sort()
        print(f"{'idle trigger call -> handler start':<44} p50 {statistics.median(whole):.2f} ms   "
              f"p99 {whole[int(len(whole) * 0.99) - 1]:.2f} ms")
        return statistics.median(gaps), gaps[int(len(gaps) * 0.99) - 1]
    finally:
        worker.terminate()
        await worker.wait()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _idle_workers(address: str, md: tuple[tuple[str, str], ...], pid: int, count: int) -> float:
    """Extra server RSS (MB) with `count` idle worker sessions open (100 streams per connection)."""
    before = _rss_mb(pid)
    channels = [grpc.aio.insecure_channel(address) for _ in range((count + 99) // 100)]
    hello = worker_pb2.ConnectRequest(hello=worker_pb2.Hello(slots=10, handlers=[
        worker_pb2.Handler(job_slug="noop-worker")]))
    calls = []
    try:
        for i in range(count):
            call = worker_pb2_grpc.WorkerServiceStub(channels[i // 100]).Connect(metadata=md)
            await call.write(hello)
            assert (await call.read()).WhichOneof("message") == "welcome"
            calls.append(call)
        await asyncio.sleep(2)  # let the server settle (heartbeats, listing rows) before measuring
        return _rss_mb(pid) - before
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--slots", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=int, default=1000)
    parser.add_argument("--idle-workers", type=int, default=1000)
    parser.add_argument("--curve", default="",
                        help="slot counts, comma-separated (e.g. 100,250,500,1000,2000): one more drain of --runs "
                             "runs for each, printed with its CPU per run, after the repeats")
    parser.add_argument("--limited", type=int, default=0,
                        help="one more drain, of a job with this max_concurrency (flow control through the gated "
                             "claim; at --slots or more it never binds), printed against the median")
    parser.add_argument("--pg-stats", action="store_true",
                        help="print what each drain cost PostgreSQL: per statement (pg_stat_statements, which the "
                             "server must preload), per table and index")
    args = parser.parse_args()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    async with served("all", port=port) as (channel, conn, admin_key, pid):
        print(f"strait worker bench, {_load()}")
        _, md, unused = await _setup(channel, admin_key, "http://127.0.0.1:9/unused")
        # Workers need a key with the worker scope; the API calls use the same one.
        key = (await project_pb2_grpc.ProjectServiceStub(channel).CreateApiKey(project_pb2.CreateApiKeyRequest(
            project_id=unused.project_id, name="workers", scopes=["workers:connect"]),
            metadata=(("authorization", f"Bearer {admin_key}"),))).secret
        md = (("authorization", f"Bearer {key}"),)
        jobs = job_pb2_grpc.JobServiceStub(channel)
        job = await _worker_job(jobs, md, "noop-worker")
        rates, raws, cpus = [], [], []
        for _ in range(args.repeats):
            rate, cpu = await _drain(conn, args, address, key, jobs, md, job, pid)
            rates.append(rate)
            cpus.append(cpu)
            raws.append(await _raw_claim_limit(conn, args.runs))
            print(f"{f'{args.runs:,} worker runs, 1 worker, {args.slots} slots':<44} {rates[-1]:,.0f} runs/s   "
                  f"raw claim limit {raws[-1]:,.0f} rows/s ({_load()})")
            print(f"{'  CPU per run':<44} " + "   ".join(f"{name} {seconds * 1e6:.0f} us"
                                                         for name, seconds in cpu.items()))
        ratio = statistics.median(rates) / statistics.median(raws)
        print(f"{'median':<44} {statistics.median(rates):,.0f} runs/s = {ratio:.2f} of the raw claim limit; CPU per "
              "run " + "   ".join(f"{name} {statistics.median(c[name] for c in cpus) * 1e6:.0f} us"
                                  for name in cpus[0]))
        for slots in [int(n) for n in args.curve.split(",") if n.strip()]:
            rate, cpu = await _drain(conn, argparse.Namespace(**{**vars(args), "slots": slots}), address, key, jobs,
                                     md, job, pid)
            print(f"{f'  curve: {slots:,} slots':<44} {rate:,.0f} runs/s   CPU per run " + "   ".join(
                f"{name} {seconds * 1e6:.0f} us" for name, seconds in cpu.items()) + f" ({_load()})")
        if args.limited:
            limited = await _worker_job(jobs, md, "limited-worker", max_concurrency=args.limited)
            rate, cpu = await _drain(conn, args, address, key, jobs, md, limited, pid)
            print(f"{f'  max_concurrency={args.limited:,}':<44} {rate:,.0f} runs/s = "
                  f"{rate / statistics.median(rates):.2f} of the median   CPU per run " + "   ".join(
                      f"{name} {seconds * 1e6:.0f} us" for name, seconds in cpu.items()) + f" ({_load()})")
        if args.idle_workers:
            extra = await _idle_workers(address, md, pid, args.idle_workers)
            print(f"{f'{args.idle_workers:,} idle connected workers':<44} +{extra:.0f} MB server RSS ({_load()})")
        lag = await _disconnect(address, key, jobs, md)
        print(f"{'SIGKILLed worker: its 100 runs on another':<44} {lag * 1000:.0f} ms after the kill ({_load()})")
        if args.latency:
            p50, p99 = await _latency(args, address, key, jobs, md)
            print(f"{'idle trigger return -> handler start':<44} p50 {p50:.2f} ms   p99 {p99:.2f} ms "
                  f"({args.latency} triggers; {_load()})")


if __name__ == "__main__":
    os.environ.setdefault("STRAIT_LOG_LEVEL", "warning")
    # The idle-workers figure opens more sessions with one key than a server takes by default.
    os.environ.setdefault("STRAIT_WORKER_MAX_STREAMS_PER_KEY", "100000")
    try:
        asyncio.run(main())
    except grpc.aio.AioRpcError as err:
        print(f"bench failed: {err.code().name} {err.details()}", file=sys.stderr)
        sys.exit(1)
