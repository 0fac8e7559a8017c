"""Test backends: PostgreSQL and Redis from STRAIT_TEST_* URLs, embedded servers, or testcontainers.

Each test gets its own database cloned from a migrated template and its own Redis namespace.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from strait_server import db


@dataclass(frozen=True)
class Backend:
    database_url: str  # a maintenance database on the server (CREATE DATABASE runs here)
    redis_url: str


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _psycopg_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest if scheme in ("postgres", "postgresql") else url


@contextmanager
def start_backend() -> Iterator[Backend]:
    choice = os.environ.get("STRAIT_TEST_BACKEND", "")
    if choice == "testcontainers":
        try:  # testcontainers 4.14+ moved the modules (the old paths warn, and warnings are errors here)
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]
            from testcontainers.redis import RedisContainer  # type: ignore[no-redef]

        with PostgresContainer("postgres:16-alpine", driver=None) as pg, RedisContainer("redis:7-alpine") as rd:
            redis_url = f"redis://{rd.get_container_host_ip()}:{rd.get_exposed_port(6379)}/0"
            yield Backend(pg.get_connection_url(), redis_url)
        return
    db_url = os.environ.get("STRAIT_TEST_DATABASE_URL", "")
    redis_url = os.environ.get("STRAIT_TEST_REDIS_URL", "")
    started: list[Any] = []  # embedded servers, stopped at the end (and with this process, on Linux)
    if not db_url or not redis_url:
        from strait_server import embedded as emb

        data_dir = Path(tempfile.mkdtemp(prefix="strait-test-"))
        if not db_url:
            db_url, pg = emb.start_postgres(data_dir / "pg")
            started.append(pg)
        if not redis_url:
            redis_url, rd = emb.start_redis(data_dir / "redis")
            started.append(rd)
    try:
        yield Backend(db_url, redis_url)
    finally:
        for server in started:
            server.stop()


class Databases:
    """A migrated template database, and throwaway clones of it."""

    def __init__(self, backend: Backend) -> None:
        self._admin_url = _psycopg_url(backend.database_url)
        self.template = f"strait_tpl_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.template}"')
        db._apply_migrations_sync(with_database(backend.database_url, self.template))
        self._base_url = backend.database_url

    def clone(self) -> str:
        name = f"strait_t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return with_database(self._base_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with psycopg.connect(self._admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
