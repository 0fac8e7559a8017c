"""An embedded PostgreSQL: the binaries of the pgserver wheel, run as a child of this process.

pgserver's own lifecycle is not used: it starts the server through `pg_ctl`, which detaches it (so nothing
stops it when its parent is killed), shares a running server between the processes that ask for the same
directory, and stops it only when the last of them is recorded as gone (a killed process never is). Here
the server is this process's child, armed to fast-shutdown when this process ends, and a server an earlier
run left behind is stopped before a new one starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import IO, Any

from strait_server.embedded.children import BackendError, alive_pid, spawn, stop_child, stop_leftover

SOCKET_NAME_MAX = 100  # bytes of a Unix socket path, with a margin under the 104-108 that systems allow
SYSTEM_USER = "pgserver"
MISSING = ("the embedded backends need the {package} package, installed with strait[server] on Python 3.11 and "
           "3.12 (it has no wheel for newer versions yet); elsewhere run `strait serve` against your own "
           "PostgreSQL and Redis")  # pgserver's own choice: PostgreSQL refuses to run as root


def _pgserver() -> tuple[Path, Any]:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        try:
            from pgserver import utils
            from pgserver._commands import POSTGRES_BIN_PATH
        except ImportError:
            raise BackendError(MISSING.format(package="pgserver")) from None
    return Path(POSTGRES_BIN_PATH), utils


class EmbeddedPostgres:
    """A PostgreSQL cluster in `pgdata` (created on first use), listening only on a Unix socket."""

    def __init__(self, pgdata: Path, log: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._bin, self._utils = _pgserver()
        self._user = SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.socket_dir = self._socket_dir()

    @property
    def url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        leftover = alive_pid(self.pgdata / "postmaster.pid", str(self.pgdata))
        if leftover is not None:
            stop_leftover(leftover, signal.SIGINT, timeout=30)
        if self._user:
            self._prepare_for_system_user()
        with self.log.open("a") as log:
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(log)
            self._process = spawn([str(self._bin / "postgres"), "-D", str(self.pgdata), "-k", str(self.socket_dir),
                                   "-c", "listen_addresses="],
                                  death_signal=signal.SIGINT, user=self._user, output=log, cwd=self.pgdata)
        try:
            self._wait_ready(timeout)
        except BaseException:  # a stop signal during start-up, too
            self.stop()
            raise

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, the data is written); killed after 30 s."""
        if self._process is not None:
            stop_child(self._process, signal.SIGINT, timeout=30)

    def _initdb(self, log: IO[str]) -> None:
        """Into a directory of its own, renamed to the data directory once complete: PG_VERSION is among the
        first files initdb writes, so a start cut short in the middle (a signal the process could not answer,
        a power cut) would otherwise leave a cluster that looks made and lacks its databases."""
        fresh = self.pgdata.with_name(self.pgdata.name + ".initdb")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(mode=0o700)
        if self._user:
            import pwd

            entry = pwd.getpwnam(self._user)
            os.chown(fresh, entry.pw_uid, entry.pw_gid)
        process = spawn([str(self._bin / "initdb"), "-D", str(fresh), "--auth=trust", "--auth-local=trust",
                         "--encoding=utf8", "-U", "postgres"],
                        death_signal=signal.SIGKILL, user=self._user, output=log, cwd=fresh)
        try:
            if process.wait(timeout=120) != 0:
                raise BackendError(f"initdb failed for {self.pgdata}; see {self.log}")
        except BaseException:
            process.kill()
            process.wait()
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        # The data directory holds no cluster (no PG_VERSION): at most the socket of an earlier start.
        shutil.rmtree(self.pgdata)
        fresh.rename(self.pgdata)

    def _wait_ready(self, timeout: float) -> None:
        """Until postmaster.pid says `ready` (its eighth line) for this very process."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BackendError(f"PostgreSQL exited during start-up; see {self.log}")
            try:
                lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(self._process.pid) and lines[7].strip() == "ready":
                return
            time.sleep(0.05)
        raise BackendError(f"PostgreSQL did not start within {timeout:.0f} s; see {self.log}")

    def _socket_dir(self) -> Path:
        """The data directory, unless the socket's path would be too long there."""
        if len(str(self.pgdata / ".s.PGSQL.5432").encode()) <= SOCKET_NAME_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"strait-pg-{digest}"

    def _prepare_for_system_user(self) -> None:
        """As root, as pgserver does it: a system user of its own who owns the data and may reach the
        binaries."""
        import pwd

        self._utils.ensure_user_exists(self._user)
        entry = pwd.getpwnam(self._user)
        self._utils.ensure_prefix_permissions(self.pgdata)
        self._utils.ensure_prefix_permissions(self._bin)
        self._utils.ensure_folder_permissions(self._bin, 0o055)  # group and others: read and execute
        self._utils.ensure_folder_permissions(self._bin.parent / "lib", 0o044)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if self.socket_dir != self.pgdata:
            self.socket_dir.chmod(0o777)
