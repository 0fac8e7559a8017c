"""A PostgreSQL cluster of a test's own, to restart and crash (fault tests never touch the shared server).

Built from the binaries of the pgserver wheel, which every test run has installed: it listens on a Unix socket
in a directory of its own, and is stopped and deleted at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from strait_server import db


class OwnPostgres:
    def __init__(self, server: Any, pgdata: Path) -> None:
        self._server = server
        self._pgdata = pgdata
        self.url: str = server.get_uri()

    async def restart(self, mode: str) -> None:
        """`pg_ctl restart -m fast|immediate`: every connection breaks; `immediate` loses what was committed
        without waiting for the WAL flush (synchronous_commit off), as a crash would."""
        await asyncio.to_thread(self._pg_ctl, ["-w", "-t", "60", "-m", mode, "-l", str(self._pgdata / "log"),
                                               "restart"])

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(self._pg_ctl, ["-w", "-t", "60", "-m", mode, "stop"])

    async def start(self) -> None:
        # The options pgserver started it with: no TCP listener, the socket in its own directory.
        socket_dir = self._server.get_postmaster_info().socket_dir
        await asyncio.to_thread(self._pg_ctl, ["-w", "-t", "60", "-o", '-h ""', "-o", f"-k {socket_dir}",
                                               "-l", str(self._pgdata / "log"), "start"])

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        argv = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self._pgdata), *args]
        if self._server.system_user is not None:  # as root, pgserver runs PostgreSQL as a user of its own
            argv = ["runuser", "-u", self._server.system_user, "--", *argv]
        # Not subprocess's `user=`: that forks without vfork, and gRPC's fork handlers crash the child while
        # calls are in flight; a plain exec of runuser is spawned with vfork.
        subprocess.run(argv, check=True, timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@asynccontextmanager
async def own_postgres() -> AsyncIterator[OwnPostgres]:
    """A new cluster with Strait's migrations applied."""
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="strait-fault-pg-"))
    server = await asyncio.to_thread(pgserver.get_server, str(pgdata), cleanup_mode="delete")
    try:
        pg = OwnPostgres(server, pgdata)
        await db.apply_migrations(pg.url)
        yield pg
    finally:
        await asyncio.to_thread(server.cleanup)
