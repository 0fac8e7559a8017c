"""schema/schema.sql describes the schema the migrations build, and the description covers what a migration
may add (scripts/dump_schema.py writes it, strait_server/schema_dump.py reads the catalogs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from strait_server.schema_dump import dump_database, unified_diff
from tests.backends import Backend

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schema" / "schema.sql"


async def test_schema_file_matches_the_migrations(database_url: str) -> None:
    # The per-test database is a clone of the migrated template.
    fresh = await dump_database(database_url)
    committed = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
    if fresh != committed:
        pytest.fail("schema/schema.sql does not match the schema the migrations build. Regenerate it with "
                    "`python scripts/dump_schema.py` and commit it with the migrations:\n"
                    + unified_diff(committed, fresh), pytrace=False)


def test_the_script_finds_the_committed_file_up_to_date(backend: Backend) -> None:
    """The script migrates a throwaway database of its own on the server, then drops it."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "dump_schema.py"), "--check",
                             "--database-url", backend.database_url], capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr


# Objects no migration makes yet, each in the form PostgreSQL 15 and 16 both print it. A view's query is not
# shown: the two versions print it differently.
EXTRAS = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer DEFAULT 1 NOT NULL CONSTRAINT positive_check CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE SEQUENCE free_seq INCREMENT 5 START 100 CACHE 10 CYCLE;
CREATE TABLE "Extras" (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text,
    small text COMPRESSION pglz,
    doubled integer GENERATED ALWAYS AS (id * 2) STORED,
    label text COLLATE "C",
    feeling mood DEFAULT 'ok',
    at timestamptz DEFAULT '2024-01-02 03:04:05+02',
    span interval DEFAULT '1 day 2 hours',
    EXCLUDE USING btree (label WITH =)
) WITH (fillfactor = 70, toast.autovacuum_enabled = false);
ALTER TABLE "Extras" ALTER COLUMN body SET STORAGE EXTERNAL, ALTER COLUMN body SET STATISTICS 500,
    ALTER COLUMN small SET (n_distinct = -0.5), REPLICA IDENTITY FULL;
CREATE INDEX extras_body_idx ON "Extras" (body) WITH (fillfactor = 50);
ALTER TABLE "Extras" CLUSTER ON extras_body_idx;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER extras_touch BEFORE UPDATE ON "Extras" FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE "Extras" DISABLE TRIGGER extras_touch;
CREATE TABLE scratch (k integer, v text) PARTITION BY RANGE (k);
CREATE UNLOGGED TABLE scratch_low PARTITION OF scratch FOR VALUES FROM (0) TO (10);
CREATE TRIGGER scratch_touch BEFORE UPDATE ON scratch FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW extras_view AS SELECT id, label FROM "Extras" WHERE id > 1;
CREATE AGGREGATE total(integer) (sfunc = int4pl, stype = integer);
"""

DESCRIBED = [
    "CREATE TYPE floatrange AS RANGE (SUBTYPE = double precision);",
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');",
    "CREATE TYPE pair AS (\n    a integer,\n    b text\n);",
    "CREATE DOMAIN positive AS integer DEFAULT 1 NOT NULL CONSTRAINT positive_check CHECK ((VALUE > 0));",
    'CREATE SEQUENCE "Extras_id_seq" AS integer START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 2147483647 CACHE 1 NO CYCLE'
    ' OWNED BY "Extras".id;',
    "CREATE SEQUENCE free_seq AS bigint START 100 INCREMENT 5 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 10"
    " CYCLE;",
    """\
CREATE TABLE "Extras" (
    id integer GENERATED ALWAYS AS IDENTITY NOT NULL,
    body text STORAGE EXTERNAL,
    small text COMPRESSION pglz,
    doubled integer GENERATED ALWAYS AS ((id * 2)) STORED,
    label text COLLATE "C",
    feeling mood DEFAULT 'ok'::mood,
    at timestamp with time zone DEFAULT '2024-01-02 01:04:05+00'::timestamp with time zone,
    span interval DEFAULT '1 day 02:00:00'::interval,
    CONSTRAINT "Extras_label_excl" EXCLUDE USING btree (label WITH =),
    CONSTRAINT "Extras_pkey" PRIMARY KEY (id)
) WITH (fillfactor=70, toast.autovacuum_enabled=false);
ALTER TABLE "Extras" ALTER COLUMN body SET STATISTICS 500;
ALTER TABLE "Extras" ALTER COLUMN small SET (n_distinct=-0.5);
CREATE INDEX extras_body_idx ON public."Extras" USING btree (body) WITH (fillfactor='50');
ALTER TABLE "Extras" CLUSTER ON extras_body_idx;
CREATE TRIGGER extras_touch BEFORE UPDATE ON public."Extras" FOR EACH ROW EXECUTE FUNCTION touch();
ALTER TABLE "Extras" DISABLE TRIGGER extras_touch;
ALTER TABLE "Extras" REPLICA IDENTITY FULL;
""",
    """\
CREATE VIEW extras_view (
    id integer,
    label text COLLATE "C"
) AS ...;  -- the query is in the migration: PostgreSQL versions print it differently
""",
    """\
CREATE TABLE scratch (
    k integer,
    v text
) PARTITION BY RANGE (k);
CREATE TRIGGER scratch_touch BEFORE UPDATE ON public.scratch FOR EACH ROW EXECUTE FUNCTION touch();

CREATE UNLOGGED TABLE scratch_low (
    k integer,
    v text
);
-- a partition of scratch FOR VALUES FROM (0) TO (10)
""",
    "-- aggregate total(integer)\n",
    """\
CREATE OR REPLACE FUNCTION public.touch()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$ BEGIN RETURN NEW; END $function$;
""",
]


async def test_the_description_covers_what_a_migration_may_add(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(EXTRAS)
    finally:
        await conn.close()
    dump = await dump_database(database_url)
    for text in DESCRIBED:
        assert text in dump
    # The range type's constructors are PostgreSQL's, not ours.
    assert "FUNCTION public.floatrange" not in dump
    assert dump.index("CREATE TABLE \"Extras\"") < dump.index("CREATE TABLE api_keys") < dump.index("scratch")
