"""Regenerate schema/schema.sql: the database schema that the migrations in migrations/ add up to.

Usage: python scripts/dump_schema.py [--check] [--database-url URL]

Creates a throwaway database on the PostgreSQL server of URL (by default STRAIT_TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres; the role needs CREATEDB), applies every migration to it,
describes its schema from the system catalogs (strait_server/schema_dump.py) and drops it again. ``--check``
writes nothing: it prints a unified diff and exits 1 when the committed file is stale.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from strait_server import db
from strait_server.schema_dump import dump_database, unified_diff

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema" / "schema.sql"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def migrated_schema(server_url: str) -> str:
    """The schema of a new database with every migration applied."""
    name = f"strait_schema_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        # template0: nothing that a site added to template1 ends up in the description.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            url = with_database(server_url, name)
            await db.apply_migrations(url)
            return await dump_database(url)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url",
                        help="a PostgreSQL server's maintenance database, where the throwaway database is created "
                             f"(default: STRAIT_TEST_DATABASE_URL, else {DEFAULT_URL})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff if schema/schema.sql is stale")
    args = parser.parse_args()
    server_url = args.database_url or os.environ.get("STRAIT_TEST_DATABASE_URL") or DEFAULT_URL
    fresh = asyncio.run(migrated_schema(server_url))
    if args.check:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        diff = unified_diff(current, fresh)
        if diff:
            sys.stdout.write(diff)
            print("schema/schema.sql is stale; run: python scripts/dump_schema.py")
            return 1
        return 0
    SCHEMA_FILE.parent.mkdir(exist_ok=True)
    SCHEMA_FILE.write_text(fresh, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
