"""The TypeScript client (clients/typescript) against a real `strait serve`: its node tests (`npm test`) trigger
a job whose endpoint they serve themselves, watch the run to completion over WatchRun, and decode the google.rpc
details of refused calls. They need its npm packages: `npm ci` in clients/typescript."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from strait_server.config import Settings
from tests.conftest import connect
from tests.processes import serve_subprocess

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "typescript"


def npm() -> str:
    """The npm command; fails the test (never skips it) when the TypeScript client cannot be built."""
    found = shutil.which("npm")
    if found is None:
        pytest.fail("npm is not on PATH: install Node.js 20 or later to test the TypeScript client")
    if not (CLIENT_DIR / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("the TypeScript client's packages are not installed: run `npm ci` in clients/typescript")
    return found


def tap_counts(output: str) -> dict[str, int]:
    """The closing counts of node's TAP report ("# tests 8", "# pass 8", ...)."""
    return {
        name: int(n)
        for name, n in re.findall(r"^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$", output, re.MULTILINE)
    }


# Compiling the client takes a while on a busy machine, before the tests themselves start.
@pytest.mark.timeout(300)
async def test_the_typescript_client_passes_its_tests_against_a_real_server(settings: Settings) -> None:
    command = npm()
    async with serve_subprocess(settings) as (_, port):
        api = await connect(port, settings.admin_key)
        await api.channel.close()
        env = {
            **os.environ,
            "STRAIT_ADDRESS": f"127.0.0.1:{port}",
            "STRAIT_API_KEY": api.key,
            "STRAIT_ADMIN_KEY": settings.admin_key,
            "NO_COLOR": "1",
        }
        proc = await asyncio.create_subprocess_exec(
            command, "test", cwd=CLIENT_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    output = out.decode(errors="replace")
    assert proc.returncode == 0, f"npm test failed:\n{output}"
    counts = tap_counts(output)
    assert counts.get("tests", 0) > 0 and counts.get("pass") == counts["tests"], f"not every test passed:\n{output}"
