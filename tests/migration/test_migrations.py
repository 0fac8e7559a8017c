"""All migrations apply, roll back, and apply again; the result matches a single forward run."""

from __future__ import annotations

import asyncpg
import pytest

from strait_server import db
from strait_server.app import App
from strait_server.config import Settings
from strait_server.schema_dump import dump_database


async def test_up_down_up_round_trip(database_url: str) -> None:
    """Compared by the whole description of schema/schema.sql: columns, constraints, indexes, functions,
    sequences and storage settings."""
    # The per-test database is a clone of the migrated template.
    before = await dump_database(database_url)
    assert "\nCREATE TABLE runs (\n" in before
    await db.rollback_migrations(database_url)
    left_behind = [line for line in (await dump_database(database_url)).splitlines() if line.startswith("CREATE ")]
    assert left_behind == []
    assert await db.apply_migrations(database_url)
    assert await dump_database(database_url) == before
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
