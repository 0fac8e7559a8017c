"""Projects and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from strait_server import ids
from strait_server.errors import AlreadyExists
from strait_server.model import ApiKey, Project

INSERT_PROJECT = """
INSERT INTO projects (id, slug, name) VALUES ($1, $2, $3)
ON CONFLICT (slug) DO NOTHING
RETURNING id, slug, name, create_time
"""
"""$1 id, $2 slug, $3 name. No row: the slug is taken."""

GET_PROJECT = "SELECT id, slug, name, create_time FROM projects WHERE id = $1"
GET_PROJECT_BY_SLUG = "SELECT id, slug, name, create_time FROM projects WHERE slug = $1"

LIST_PROJECTS = """
SELECT id, slug, name, create_time FROM projects
WHERE ($1::text[] IS NULL OR id = ANY($1::text[]))
  AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3))
ORDER BY create_time, id
LIMIT $4
"""
"""$1 restrict to ids (NULL: all), $2/$3 keyset cursor, $4 limit."""

INSERT_KEY = """
INSERT INTO api_keys (id, project_id, name, key_prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
RETURNING id, project_id, name, key_prefix, create_time, revoke_time
"""

LIST_KEYS = """
SELECT id, project_id, name, key_prefix, create_time, revoke_time FROM api_keys
WHERE project_id = $1 AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3))
ORDER BY create_time, id
LIMIT $4
"""

REVOKE_KEY = """
UPDATE api_keys SET revoke_time = coalesce(revoke_time, now())
WHERE id = $1 AND ($2::text IS NULL OR project_id = $2)
RETURNING id, project_id, name, key_prefix, create_time, revoke_time
"""
"""$1 key id, $2 project scope (NULL for the admin)."""

AUTHENTICATE = "SELECT project_id FROM api_keys WHERE key_hash = $1 AND revoke_time IS NULL"


def _project(row: Any) -> Project:
    return Project(id=row["id"], slug=row["slug"], name=row["name"], create_time=row["create_time"])


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"], project_id=row["project_id"], name=row["name"], key_prefix=row["key_prefix"],
        create_time=row["create_time"], revoke_time=row["revoke_time"],
    )


class ProjectStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, slug: str, name: str) -> Project:
        row = await self._pool.fetchrow(INSERT_PROJECT, ids.new_id("proj"), slug, name)
        if row is None:
            raise AlreadyExists("project", slug)
        return _project(row)

    async def get(self, project_id: str) -> Project | None:
        row = await self._pool.fetchrow(GET_PROJECT, project_id)
        return None if row is None else _project(row)

    async def get_by_slug(self, slug: str) -> Project | None:
        row = await self._pool.fetchrow(GET_PROJECT_BY_SLUG, slug)
        return None if row is None else _project(row)

    async def list_projects(self, only: list[str] | None, after: tuple[datetime, str] | None,
                   limit: int) -> list[Project]:
        t, i = after if after else (None, None)
        rows = await self._pool.fetch(LIST_PROJECTS, only, t, i, limit)
        return [_project(r) for r in rows]

    async def create_key(self, project_id: str, name: str, prefix: str, digest: str) -> ApiKey:
        row = await self._pool.fetchrow(INSERT_KEY, ids.new_id("key"), project_id, name, prefix, digest)
        assert row is not None
        return _key(row)

    async def list_keys(self, project_id: str, after: tuple[datetime, str] | None,
                        limit: int) -> list[ApiKey]:
        t, i = after if after else (None, None)
        rows = await self._pool.fetch(LIST_KEYS, project_id, t, i, limit)
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, project_id: str | None) -> ApiKey | None:
        row = await self._pool.fetchrow(REVOKE_KEY, key_id, project_id)
        return None if row is None else _key(row)

    async def authenticate(self, digest: str) -> str | None:
        value = await self._pool.fetchval(AUTHENTICATE, digest)
        return None if value is None else str(value)
