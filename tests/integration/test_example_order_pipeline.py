"""examples/order_pipeline.py runs as documented: against a server (STRAIT_ADDRESS, STRAIT_API_KEY) and the
echo endpoint of examples/echo_endpoint.py, it runs a small order (review skipped) and a big one (review
approved by the script), both to completion."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from strait_client import AsyncClient, SkipReason, StepRunStatus, WorkflowRunStatus
from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def echo_endpoint() -> Iterator[str]:
    """examples/echo_endpoint.py serving on a free port, in a thread."""
    spec = importlib.util.spec_from_file_location("echo_endpoint", EXAMPLES / "echo_endpoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_the_order_pipeline_example(app: App, api: Api, echo_endpoint: str) -> None:
    env = {**os.environ, "STRAIT_ADDRESS": address(app), "STRAIT_API_KEY": api.key}
    for _ in range(2):  # safe to run again: the jobs and the workflow are reset
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "order_pipeline.py"), echo_endpoint, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert [line for line in lines if line.startswith("approved")] == ["approved review by test"], lines
        assert [line for line in lines if line.startswith(("completed", "failed", "canceled"))] == ["completed "] * 2

    async with AsyncClient(address(app), api.key) as client:
        runs = [r async for r in client.workflow_runs.list("order-pipeline")]
        assert len(runs) == 4 and {r.status for r in runs} == {WorkflowRunStatus.COMPLETED}
        reviews = {}
        for run in runs:
            steps = {s.step_ref: s for s in await client.workflow_runs.steps(run.id)}
            assert steps["ship"].status is StepRunStatus.COMPLETED
            reviews[run.input["total"]] = steps["review"]
        assert reviews[40].skip_reason is SkipReason.CONDITION_FALSE
        assert reviews[250].status is StepRunStatus.COMPLETED
        assert reviews[250].output["comment"] == "checked by the example"
