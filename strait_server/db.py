"""PostgreSQL access: the asyncpg pool, and yoyo migrations applied at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

Pool = asyncpg.Pool


def migrations_dir() -> Path:
    """Inside a wheel the migrations sit in strait_server/migrations; in a checkout, at the top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("migrations directory not found")


def yoyo_url(database_url: str) -> str:
    """yoyo picks its DB-API driver from the scheme; we ship psycopg (v3)."""
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def _apply_migrations_sync(database_url: str) -> list[str]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(migrations_dir()))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def _rollback_all_sync(database_url: str) -> None:
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(database_url))
    try:
        migrations = read_migrations(str(migrations_dir()))
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations))
    finally:
        backend.connection.close()


async def apply_migrations(database_url: str) -> list[str]:
    applied = await asyncio.to_thread(_apply_migrations_sync, database_url)
    if applied:
        log.info("applied migrations", extra={"action": "migrate", "migrations": applied})
    return applied


async def rollback_migrations(database_url: str) -> None:
    await asyncio.to_thread(_rollback_all_sync, database_url)


class Connection(asyncpg.Connection):
    """Pooled connections carry no session state of ours (no LISTEN, session advisory locks or SETs
    after connect), so the reset query asyncpg sends on every release is a wasted round trip."""

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns travel as Python dicts/lists.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(database_url: str, *, min_size: int, max_size: int, **kwargs: Any) -> Pool:
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, connection_class=Connection,
        **kwargs,
    )
    assert pool is not None
    return pool


REQUIRED_TABLES = ("projects", "api_keys", "jobs", "runs", "run_queue", "run_leases", "run_events",
                   "idempotency_keys", "dispatchers")


def migration_ids() -> list[str]:
    """The migrations this code needs, in order (yoyo names a migration by its file name)."""
    return sorted(p.stem for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql"))


async def pending_migrations(pool: Pool) -> list[str]:
    """The migrations this code needs that the database has not applied (all of them on an empty database):
    a table that exists says little, a column added by a later migration may still be missing."""
    applied_table = await pool.fetchval("SELECT to_regclass('_yoyo_migration') IS NOT NULL")
    applied = {r["migration_id"] for r in await pool.fetch("SELECT migration_id FROM _yoyo_migration")} \
        if applied_table else set()
    return [m for m in migration_ids() if m not in applied]
