"""Schedule lag with many active schedules (issue 4): how late each cron run is created after its tick.

    python bench/bench_schedules.py [--schedules 10000] [--ticks 2] [--schedulers 1]

Starts `strait serve --mode all` (plus --schedulers - 1 extra `--mode scheduler` processes) against a fresh
database, with a local HTTP endpoint answering 200, defines --schedules jobs on "* * * * *" (written straight
into the jobs table: creating ten thousand jobs through the API is not what is measured), waits for --ticks
minute ticks and prints, per tick, the lag of the runs' creation behind the tick: p50, p99, max (target:
p99 <= 1 s). Runs are also dispatched meanwhile, as in production.

Same environment variables as bench_dispatch.py.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dispatch import FastSink, _free_port, _load, _setup, server_env
from bench.bench_flow_control import REDIS_URL, _database

DEFINE = """
INSERT INTO jobs (id, project_id, slug, name, endpoint_url, cron, next_fire_time)
SELECT 'job_sched' || g, $1, 'sched-' || g, 'sched-' || g, $2, '* * * * *',
    date_trunc('minute', now()) + interval '1 minute'
FROM generate_series(1, $3) AS g
"""

LAG = """
SELECT tick, min(lag) AS best, percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99, max(lag) AS worst, count(*) AS n
FROM (SELECT (metadata->>'scheduled_tick')::timestamptz AS tick,
          extract(epoch FROM create_time - (metadata->>'scheduled_tick')::timestamptz) AS lag
      FROM runs WHERE metadata->>'triggered_by' = 'cron') AS fired
GROUP BY tick ORDER BY tick
"""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=2)
    parser.add_argument("--schedulers", type=int, default=1)
    args = parser.parse_args()
    async with _database() as database_url:
        sink = FastSink()
        await sink.start()
        port = _free_port()
        admin_key = secrets.token_hex(16)
        env = server_env(database_url, REDIS_URL, database_url.rsplit("/", 1)[1], port, admin_key)
        servers = [await asyncio.create_subprocess_exec(sys.executable, "-m", "strait_server", "serve", "--mode",
                                                        "all", env=env)]
        for _ in range(args.schedulers - 1):
            extra = dict(env, STRAIT_ADDRESS=f"127.0.0.1:{_free_port()}")
            servers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "strait_server", "serve", "--mode", "scheduler", env=extra))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        conn = await asyncpg.connect(database_url)
        print(f"strait schedule-lag bench: {args.schedules:,} schedules, {args.schedulers} scheduler process(es); "
              f"{_load()}", flush=True)
        try:
            _, _, job = await _setup(channel, admin_key, f"http://127.0.0.1:{sink.port}/run")
            await conn.execute(DEFINE, job.project_id, f"http://127.0.0.1:{sink.port}/run", args.schedules)
            await conn.execute("ANALYZE jobs")
            expected = args.schedules * args.ticks
            deadline = time.monotonic() + 60 * (args.ticks + 1) + 30
            while await conn.fetchval("SELECT count(*) FROM runs WHERE metadata->>'triggered_by' = 'cron'") \
                    < expected:
                assert time.monotonic() < deadline, "the ticks did not all fire"
                await asyncio.sleep(0.5)
            for row in await conn.fetch(LAG):
                print(f"tick {row['tick']:%H:%M}: {row['n']:,} runs, lag min {row['best']:.3f}s p50 {row['p50']:.3f}s "
                      f"p99 {row['p99']:.3f}s max {row['worst']:.3f}s (target p99 <= 1s)")
            print(f"done, {_load()}")
        finally:
            await conn.close()
            await channel.close()
            for proc in servers:
                proc.terminate()
                await proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
