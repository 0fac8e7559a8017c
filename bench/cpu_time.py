"""CPU time that processes on this machine spent during a benchmark phase (from /proc, so Linux only).

Throughput on a shared machine moves with whatever else runs there; the CPU seconds each process spent per unit
of work move much less, which makes them the figure to compare two versions by.
"""

from __future__ import annotations

import os

import asyncpg

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far; 0 when it is gone or not readable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


async def backend_pids(conn: asyncpg.Connection) -> list[int]:
    """The PostgreSQL backends connected to conn's database (readable in /proc only when the server is local)."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]


class CpuMeter:
    """CPU spent between start() and stop() by named processes and by the database's backends (those that
    connected meanwhile count from zero; those that left meanwhile are missed)."""

    def __init__(self, conn: asyncpg.Connection, processes: dict[str, int]) -> None:
        self._conn = conn
        self._processes = processes
        self._before: dict[str, float] = {}
        self._backends: dict[int, float] = {}

    async def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self._processes.items()}
        self._backends = {pid: cpu_seconds(pid) for pid in await backend_pids(self._conn)}

    def add(self, name: str, pid: int) -> None:
        """A process started after start(): all its CPU counts."""
        self._processes[name] = pid
        self._before[name] = 0.0

    async def stop(self) -> dict[str, float]:
        spent = {name: cpu_seconds(pid) - self._before[name] for name, pid in self._processes.items()}
        spent["postgres"] = sum(
            cpu_seconds(pid) - self._backends.get(pid, 0.0) for pid in await backend_pids(self._conn)
        )
        return spent
