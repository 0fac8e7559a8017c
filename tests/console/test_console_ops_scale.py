"""The list pages and the overview with 100,000 runs in the project: the lists render one bounded page, the
overview counts every run. (How fast: bench/bench_console.py measures it; timing is no test assertion.)"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect
from tests.console.support import browserless
from tests.sink import Sink

RUNS = 100_000
BATCH = 1_000


async def seed_delayed(api: Api, job: job_pb2.Job, runs: int, callers: int = 2) -> int:
    """`runs` runs of `job` due tomorrow (nothing dispatches them), in BatchTriggerJob calls of BATCH; returns
    how many were created."""
    tomorrow = Timestamp()
    tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    request = job_pb2.BatchTriggerJobRequest(id=job.id, runs=[job_pb2.RunOptions(
        payload_json='{"n": 1}', scheduled_time=tomorrow)] * BATCH)
    calls = iter(range(runs // BATCH))
    created: set[str] = set()

    async def caller() -> None:
        for _ in calls:
            reply = await api.jobs.BatchTriggerJob(request, metadata=api.metadata, timeout=60)
            created.update(r.id for r in reply.runs)
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(created)


async def test_the_runs_list_and_the_overview_render_with_100000_runs(make_app: AppFactory, settings: Settings,
                                                                      sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        job = await api.create_job("bulk", sink.url("/never"))
        assert await seed_delayed(api, job, RUNS) == RUNS
        async with browserless(app) as b:
            await b.sign_in(api.key)
            status, page = await b.get("/runs")
            assert status == 200 and len(re.findall(r'<tr id="run-', page)) == 50 and 'rel="next"' in page
            status, page = await b.get("/overview")
            assert status == 200
            assert re.search(r"<dt>Runs created</dt><dd>100,000</dd>", page)
            depth = re.search(r'<tr><th scope="row"><a href="/runs\?job=bulk">bulk</a></th>.*?</tr>', page)
            assert depth and re.findall(r">([^<]+)</td>", depth.group(0)) == ["0", "100,000", "0", "100,000"]
            for path in ("/schedules", "/circuits", "/workers"):
                status, _ = await b.get(path)
                assert status == 200, path
    finally:
        await api.channel.close()
