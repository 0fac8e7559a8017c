"""examples/worker.py runs as documented: `--setup` creates its worker jobs, `strait worker
examples.worker:worker` serves them (an async and a sync handler, a non-retryable failure), and SIGTERM stops
it with exit code 0; `python -m strait_server worker` does the same."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("entry_point", ["strait_client.cli", "strait_server"])
async def test_the_example_worker_serves_its_jobs_and_stops_on_sigterm(app: App, api: Api, entry_point: str) -> None:
    env = {**os.environ, "STRAIT_ADDRESS": address(app), "STRAIT_API_KEY": api.key}
    setup = await asyncio.create_subprocess_exec(sys.executable, "examples/worker.py", "--setup", cwd=ROOT, env=env)
    assert await asyncio.wait_for(setup.wait(), 60) == 0
    worker = await asyncio.create_subprocess_exec(sys.executable, "-m", entry_point, "worker",
                                                  "examples.worker:worker", cwd=ROOT, env=env)
    try:
        jobs = {j.slug: j for j in await _jobs(api)}
        thumb = await api.trigger(jobs["thumbnail"], payload_json=json.dumps({"width": 1280}))
        check = await api.trigger(jobs["checksum"], payload_json=json.dumps({"a": 1}))
        bad = await api.trigger(jobs["thumbnail"], payload_json=json.dumps({"width": "big"}))
        done = await api.wait_status(thumb.id, run_pb2.RUN_STATUS_COMPLETED, timeout=60)
        assert json.loads(done.output_json) == {"width": 320, "attempt": 1}
        summed = await api.wait_status(check.id, run_pb2.RUN_STATUS_COMPLETED, timeout=60)
        assert json.loads(summed.output_json) == hashlib.sha256(str({"a": 1}).encode()).hexdigest()
        failed = await api.wait_status(bad.id, run_pb2.RUN_STATUS_FAILED, timeout=60)
        assert failed.attempt == 1 and "width must be a positive integer" in failed.error
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 30)
    assert code == 0


async def _jobs(api: Api) -> list[job_pb2.Job]:
    reply = await api.jobs.ListJobs(job_pb2.ListJobsRequest(), metadata=api.metadata)
    return list(reply.jobs)
