"""`strait dev` as a real subprocess on a throwaway data directory and port: a busy address is refused before
anything starts, the start prints only the banner, and the embedded PostgreSQL and Redis end with it however it
ends (signals, its parent dying, SIGKILL), also when an earlier run left them behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.processes import free_port

BANNER_LINES = 7
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _env() -> dict[str, str]:
    """The test run's environment without STRAIT_* (the test backends' URLs must not leak into dev)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STRAIT_")}


def _dev_argv(port: int, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "strait_server", "dev", "--address", f"127.0.0.1:{port}", "--data-dir",
            str(data_dir)]


def processes_of(data_dir: Path) -> list[int]:
    """Live processes whose command line names the data directory (the postmaster, redis-server, strait dev),
    and the postmaster's children (whose titles do not name it)."""
    named = [pid for pid, cmdline, _ in _proc_table() if str(data_dir) in cmdline]
    children = [pid for pid, _, parent in _proc_table() if parent in named]
    return sorted(set(named + children))


def _proc_table() -> list[tuple[int, str, int]]:
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, parent = (entry / "stat").read_text().rpartition(")")[2].split()[:2]
        except (OSError, ValueError):
            continue  # ended meanwhile
        if state != "Z":  # a zombie has ended; only its parent has not collected it yet
            rows.append((int(entry.name), cmdline, int(parent)))
    return rows


async def gone(data_dir: Path, timeout: float = STOP_TIMEOUT) -> None:
    async def none_left() -> bool:
        return not processes_of(data_dir)

    try:
        await eventually(none_left, timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"still running: {[_describe(pid) for pid in processes_of(data_dir)]}") from None


def _describe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    return f"{pid} {cmdline[:120]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A throwaway data directory; whatever still runs on it when the test ends (it failed) is killed."""
    yield tmp_path
    for pid in processes_of(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def backend_pids(data_dir: Path) -> tuple[int, int]:
    """The postmaster's and redis-server's pids, from their pid files."""
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    redis = int((data_dir / "redis" / "redis.pid").read_text().split()[0])
    return postmaster, redis


@dataclass
class Dev:
    process: asyncio.subprocess.Process
    banner: list[str] = field(default_factory=list)

    async def read_banner(self) -> list[str]:
        assert self.process.stdout is not None
        while not self.banner or not self.banner[-1].startswith("Stop with Ctrl-C."):
            line = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT)
            if not line:
                assert self.process.stderr is not None
                said = (await self.process.stderr.read()).decode(errors="replace")[-3000:]
                raise AssertionError(f"strait dev exited before its banner: {self.banner}\n{said}")
            self.banner.append(line.decode().rstrip("\n"))
        return self.banner


@asynccontextmanager
async def dev(data_dir: Path, port: int | None = None) -> AsyncIterator[Dev]:
    process = await asyncio.create_subprocess_exec(
        *_dev_argv(port or free_port(), data_dir), env=_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        yield Dev(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_address_in_use_is_refused_before_anything_starts(data_dir: Path) -> None:
    # The listener allows sharing (SO_REUSEPORT, as gRPC servers do): strait dev must refuse all the same.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*_dev_argv(port, data_dir), env=_env(),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert out == b""
    assert err.decode().splitlines() == [
        f"strait: cannot listen on 127.0.0.1:{port}: the port is in use (another strait dev?); stop that process "
        "or pass --address HOST:PORT"]
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert not (data_dir / "postgres").exists() and not processes_of(data_dir)  # nothing was started


async def test_the_first_start_prints_only_the_banner_and_sigterm_stops_the_backends(data_dir: Path) -> None:
    port = free_port()
    async with dev(data_dir, port) as server:
        banner = await server.read_banner()
        assert len(banner) == BANNER_LINES, banner
        assert banner[0] == f"Strait is serving on 127.0.0.1:{port} (embedded PostgreSQL and Redis in {data_dir})"
        assert banner[1] == f"  export STRAIT_ADDRESS=127.0.0.1:{port}"
        assert banner[2].startswith("  export STRAIT_API_KEY=strait_")
        metrics = banner[4].removeprefix("  metrics: ")
        assert metrics.startswith("http://127.0.0.1:") and metrics.endswith("/metrics")
        assert await _http_get(metrics) == 200
        console = banner[5].removeprefix("  console: ").removesuffix(" (sign in with the API key above)")
        assert console.startswith("http://127.0.0.1:") and console.endswith("/")
        assert await _http_get(console + "signin") == 200  # the sign-in page
        assert all(pid in processes_of(data_dir) for pid in backend_pids(data_dir))

        # A second strait dev on the same data directory is refused: it would stop these backends.
        other = await asyncio.create_subprocess_exec(*_dev_argv(free_port(), data_dir), env=_env(),
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(other.communicate(), 20)
        assert other.returncode == 2
        assert f"{data_dir} is in use by another strait dev (pid {server.process.pid})" in err.decode()

        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT) == 0
        assert server.process.stderr is not None
        assert await server.process.stderr.read() == b""  # quiet from start to stop
    await gone(data_dir)


async def _http_get(url: str) -> int:
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n".encode())
    status = (await reader.readline()).split()[1]
    writer.close()
    await writer.wait_closed()
    return int(status)


async def test_sighup_stops_dev_and_the_backends_a_killed_run_left_behind(data_dir: Path) -> None:
    # An earlier run whose backends outlived it, as pgserver's pg_ctl start leaves PostgreSQL when its process
    # is killed: detached, running on the data directory.
    async with dev(data_dir) as first:
        await first.read_banner()
        first.process.send_signal(signal.SIGTERM)
        await first.process.wait()
    await gone(data_dir)
    await _leave_a_detached_postgres(data_dir / "postgres")
    leftover = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    assert leftover in processes_of(data_dir)

    async with dev(data_dir) as server:
        await server.read_banner()
        postmaster, _ = backend_pids(data_dir)
        assert postmaster != leftover and leftover not in processes_of(data_dir)  # stopped, then started anew
        server.process.send_signal(signal.SIGHUP)
        assert await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT) == 0
    await gone(data_dir)


async def _leave_a_detached_postgres(pgdata: Path) -> None:
    script = ("import sys, warnings; warnings.simplefilter('ignore'); import pgserver; "
              "pgserver.get_server(sys.argv[1], cleanup_mode=None)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(pgdata), env=_env(),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), START_TIMEOUT) == 0


async def test_dev_stops_with_its_backends_when_its_parent_is_killed(data_dir: Path) -> None:
    # The parent: a process that started strait dev (a terminal, an IDE, a test run) and dies without a word.
    launcher = ("import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True); "
                "p.wait()")
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", launcher, *_dev_argv(free_port(), data_dir), env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        server = Dev(parent)
        dev_pid = int((await server.read_banner())[0])  # the launcher's line comes first
        assert dev_pid in processes_of(data_dir)
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
        await gone(data_dir)  # strait dev included
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def test_killing_dev_takes_its_backends_with_it(data_dir: Path) -> None:
    async with dev(data_dir) as server:
        await server.read_banner()
        postmaster, redis = backend_pids(data_dir)
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
    await gone(data_dir)
    assert postmaster and redis


async def test_a_stop_during_start_up_leaves_nothing_running(data_dir: Path) -> None:
    async with dev(data_dir) as server:
        async def initdb_started() -> bool:  # the embedded PostgreSQL is being created
            return (data_dir / "postgres.log").exists()
        await eventually(initdb_started, START_TIMEOUT, interval=0.01)
        server.process.send_signal(signal.SIGTERM)
        # 128 + SIGTERM when the start-up was cut short; 0 when the server had started and stopped cleanly.
        assert await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT) in (0, 128 + signal.SIGTERM)
    await gone(data_dir)

    async with dev(data_dir) as again:  # and the data directory still works (a cut-short cluster is made anew)
        await again.read_banner()
        again.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.process.wait(), STOP_TIMEOUT) == 0
    await gone(data_dir)


async def test_without_the_embedded_backends_package_dev_says_what_to_install(data_dir: Path,
                                                                              tmp_path_factory: pytest.TempPathFactory
                                                                              ) -> None:
    # As on a Python without a pgserver wheel: importing it fails.
    shadow = tmp_path_factory.mktemp("no-pgserver")
    (shadow / "pgserver").mkdir()
    (shadow / "pgserver" / "__init__.py").write_text("raise ImportError('no wheel for this Python')\n")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(*_dev_argv(free_port(), data_dir), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1 and out == b""
    assert err.decode().startswith("strait: the embedded backends need the pgserver package, installed with "
                                   "strait[server] on Python 3.11 and 3.12"), err.decode()
    assert not processes_of(data_dir)
