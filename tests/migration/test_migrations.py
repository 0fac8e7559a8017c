"""All migrations apply, roll back, and apply again; the result matches a single forward run."""

from __future__ import annotations

import asyncpg
import pytest

from strait_server import db
from strait_server.app import App
from strait_server.config import Settings

SCHEMA_QUERY = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '_yoyo%'
  AND table_name <> 'yoyo_lock'
ORDER BY table_name, column_name
"""
INDEX_QUERY = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"


async def _schema(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        cols = [tuple(r) for r in await conn.fetch(SCHEMA_QUERY)]
        idx = [tuple(r) for r in await conn.fetch(INDEX_QUERY) if not str(r[0]).startswith("_yoyo")]
        return cols, idx
    finally:
        await conn.close()


async def test_up_down_up_round_trip(database_url: str) -> None:
    # The per-test database is a clone of the migrated template.
    before = await _schema(database_url)
    assert any(c[0] == "runs" for c in before[0])
    await db.rollback_migrations(database_url)
    tables_after_rollback = {c[0] for c in (await _schema(database_url))[0]}
    assert not tables_after_rollback & set(db.REQUIRED_TABLES)
    assert await db.apply_migrations(database_url)
    assert await _schema(database_url) == before
    assert await db.apply_migrations(database_url) == []  # idempotent


def test_every_migration_has_a_rollback() -> None:
    directory = db.migrations_dir()
    forward = sorted(p for p in directory.glob("*.sql") if not p.name.endswith(".rollback.sql"))
    assert forward
    for path in forward:
        assert (directory / f"{path.stem}.rollback.sql").exists(), path.name


async def test_start_up_refuses_a_database_that_lacks_a_migration(database_url: str, settings: Settings) -> None:
    """Judged by the migrations applied, not by tables present: a missing column would pass a table check."""
    last = db.migration_ids()[-1]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = $1", last)
    finally:
        await conn.close()
    app = App(settings)
    with pytest.raises(RuntimeError, match=f"lacks migrations {last}; run `strait migrate`"):
        await app.start(migrate=False)
    await app.stop()
