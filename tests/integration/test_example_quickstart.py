"""examples/quickstart.py runs as the README shows it, and again: the second run's failing endpoint still has
its circuit closed (the script resets it), so every run finishes within runs.wait's timeout."""

from __future__ import annotations

import asyncio
import os
import sys

from strait_server.app import App
from tests.conftest import Api
from tests.integration.test_client import address
from tests.integration.test_example_order_pipeline import EXAMPLES, echo_endpoint  # noqa: F401 - a fixture


async def test_the_quickstart_runs_twice_in_a_row(app: App, api: Api, echo_endpoint: str) -> None:  # noqa: F811
    env = {**os.environ, "STRAIT_ADDRESS": address(app), "STRAIT_API_KEY": api.key}
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "quickstart.py"), echo_endpoint, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert lines[1] == "completed {'echo': {'name': 'world'}, 'attempt': 1}", lines
        assert lines[2] == "dead_letter endpoint returned 503 [(1, 503), (2, 503), (3, 503)]", lines
        assert lines[-1].startswith("completed replay of run_") and lines[-1].endswith(
            "{'echo': {'order': 42}, 'attempt': 1}"), lines
