"""What a benchmark phase cost PostgreSQL: per statement (pg_stat_statements) and per table and index.

The server the bench uses must load pg_stat_statements (`shared_preload_libraries = 'pg_stat_statements'`);
`pg_stat_statements.track_planning = on` adds the time spent planning (plan ms, in all). Statements are
counted for the benchmark's database only, tables and indexes from the counters of that database (a
difference of two snapshots).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

_TABLES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables
"""

_INDEXES = """
SELECT i.relname AS tbl, i.indexrelname AS idx, pg_relation_size(i.indexrelid) AS bytes
FROM pg_stat_user_indexes i ORDER BY i.relname, i.indexrelname
"""

_STATEMENTS = """
SELECT calls, total_exec_time, total_plan_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied,
    shared_blks_written, wal_records, wal_fpi, wal_bytes, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
ORDER BY total_exec_time DESC LIMIT $2
"""


@dataclass
class PgStats:
    """Snapshots of one database's counters; `admin` must be able to read pg_stat_statements."""

    admin: asyncpg.Connection
    conn: asyncpg.Connection
    tables: dict[str, tuple[int, ...]] | None = None
    wal: tuple[int, int, int] | None = None

    async def start(self) -> None:
        await self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await _settle_counters()
        await self.admin.execute("SELECT pg_stat_statements_reset()")
        self.tables = await self._tables()
        self.wal = await self._wal()

    async def report(self, runs: int, top: int = 12) -> str:
        await _settle_counters()
        assert self.tables is not None and self.wal is not None
        database = await self.conn.fetchval("SELECT current_database()")
        lines = [
            f"per statement ({database}; per run = divided by {runs:,} runs)",
            f"{'calls':>7} {'total ms':>9} {'mean ms':>8} {'plan ms':>8} {'rows':>8} {'hit/run':>8} {'dirt/run':>8} "
            f"{'wrt/run':>8} {'WAL B/run':>9} {'fpi':>6}  statement",
        ]
        for s in await self.admin.fetch(_STATEMENTS, database, top):
            lines.append(
                f"{s['calls']:>7} {s['total_exec_time']:>9.0f} {s['total_exec_time'] / s['calls']:>8.2f} "
                f"{s['total_plan_time']:>8.0f} {s['rows']:>8} {s['shared_blks_hit'] / runs:>8.1f} "
                f"{s['shared_blks_dirtied'] / runs:>8.2f} {s['shared_blks_written'] / runs:>8.2f} "
                f"{int(s['wal_bytes']) / runs:>9.0f} {s['wal_fpi']:>6}  {_shorten(s['query'])}"
            )
        wal = await self._wal()
        lines.append(
            f"WAL in all: {(wal[0] - self.wal[0]) / runs:,.0f} bytes/run, "
            f"{(wal[1] - self.wal[1]) / runs:.1f} records/run, {wal[2] - self.wal[2]:,} full-page images"
        )
        after = await self._tables()
        lines.append(f"per table: {'ins':>8} {'upd':>8} {'hot upd':>8} {'del':>8}")
        for name, now in sorted(after.items()):
            then = self.tables.get(name, (0, 0, 0, 0))
            ins, upd, dele, hot = (a - b for a, b in zip(now, then, strict=True))
            if ins or upd or dele:
                lines.append(f"  {name:<18} {ins:>8} {upd:>8} {hot:>8} {dele:>8}")
        lines.append("index sizes:")
        for i in await self.conn.fetch(_INDEXES):
            if i["tbl"] in ("runs", "run_queue", "run_leases", "run_events"):
                lines.append(f"  {i['tbl']:<12} {i['idx']:<28} {i['bytes'] / 2**20:>8.1f} MB")
        return "\n".join(lines)

    async def _tables(self) -> dict[str, tuple[int, ...]]:
        return {
            r["relname"]: (r["n_tup_ins"], r["n_tup_upd"], r["n_tup_del"], r["n_tup_hot_upd"])
            for r in await self.conn.fetch(_TABLES)
        }

    async def _wal(self) -> tuple[int, int, int]:
        row: Any = await self.admin.fetchrow("SELECT wal_bytes, wal_records, wal_fpi FROM pg_stat_wal")
        return int(row["wal_bytes"]), int(row["wal_records"]), int(row["wal_fpi"])


async def _settle_counters() -> None:
    # A backend reports its table counters at most once a second while busy, and within 10 s once idle
    # (PGSTAT_IDLE_INTERVAL): wait that long, so that the snapshot holds what happened before it.
    await asyncio.sleep(11)


def _shorten(query: str, width: int = 110) -> str:
    return query if len(query) <= width else query[: width - 3] + "..."
