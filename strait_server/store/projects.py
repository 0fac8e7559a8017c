"""Projects and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from strait_server import ids
from strait_server.errors import AlreadyExists
from strait_server.model import ApiKey, ApiRateLimit, Project
from strait_server.store.budgets import month_spend_of

_PROJECT_COLUMNS = f"""id, slug, name, create_time, api_rate_limit_requests, api_rate_limit_window_ms,
monthly_budget_microusd, budget_action, {month_spend_of("projects")} AS month_spend"""
_KEY_COLUMNS = ("id, project_id, name, key_prefix, create_time, revoke_time, api_rate_limit_requests, "
                "api_rate_limit_window_ms, scopes")

INSERT_PROJECT = f"""
INSERT INTO projects (id, slug, name, api_rate_limit_requests, api_rate_limit_window_ms) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (slug) DO NOTHING
RETURNING {_PROJECT_COLUMNS}
"""
"""$1 id, $2 slug, $3 name, $4/$5 rate limit (NULL: inherit). No row: the slug is taken."""

GET_PROJECT = f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = $1"
GET_PROJECT_BY_SLUG = f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE slug = $1"

UPDATE_PROJECT = f"""
UPDATE projects SET
    name = CASE WHEN $2::bool THEN $3 ELSE name END,
    api_rate_limit_requests = CASE WHEN $4::bool THEN $5 ELSE api_rate_limit_requests END,
    api_rate_limit_window_ms = CASE WHEN $4::bool THEN $6 ELSE api_rate_limit_window_ms END,
    monthly_budget_microusd = CASE WHEN $7::bool THEN $8 ELSE monthly_budget_microusd END,
    budget_action = CASE WHEN $9::bool THEN $10 ELSE budget_action END
WHERE id = $1
RETURNING {_PROJECT_COLUMNS}
"""
"""$1 id, $2 set name?, $3 name, $4 set rate limit?, $5/$6 rate limit (NULL: inherit), $7 set budget?, $8 budget
(NULL: none), $9 set budget action?, $10 action. No row: not found."""

LIST_PROJECTS = f"""
SELECT {_PROJECT_COLUMNS} FROM projects
WHERE ($1::text[] IS NULL OR id = ANY($1::text[]))
  AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3))
ORDER BY create_time, id
LIMIT $4
"""
"""$1 restrict to ids (NULL: all), $2/$3 keyset cursor, $4 limit."""

INSERT_KEY = f"""
WITH project AS (
    -- Locked, so that keys created side by side are counted one after the other against the cap.
    SELECT id FROM projects WHERE id = $2 FOR UPDATE
)
INSERT INTO api_keys (id, project_id, name, key_prefix, key_hash, api_rate_limit_requests, api_rate_limit_window_ms,
    scopes)
SELECT $1, project.id, $3, $4, $5, $6, $7, $9 FROM project
WHERE (SELECT count(*) FROM api_keys WHERE project_id = $2 AND revoke_time IS NULL) < $8
RETURNING {_KEY_COLUMNS}
"""
"""$1 id, $2 project, $3 name, $4 display prefix, $5 digest, $6/$7 rate limit (NULL: inherit), $8 how many unrevoked
keys a project may have, $9 scopes. No row: the project does not exist, or has that many keys already."""

UPDATE_KEY = f"""
UPDATE api_keys SET
    name = CASE WHEN $3::bool THEN $4 ELSE name END,
    api_rate_limit_requests = CASE WHEN $5::bool THEN $6 ELSE api_rate_limit_requests END,
    api_rate_limit_window_ms = CASE WHEN $5::bool THEN $7 ELSE api_rate_limit_window_ms END
WHERE id = $1 AND ($2::text IS NULL OR project_id = $2)
RETURNING {_KEY_COLUMNS}
"""
"""$1 key id, $2 project scope (NULL for the admin), $3 set name?, $4 name, $5 set rate limit?, $6/$7 rate
limit (NULL: inherit). No row: not found."""

LIST_KEYS = f"""
SELECT {_KEY_COLUMNS} FROM api_keys
WHERE project_id = $1 AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3))
ORDER BY create_time, id
LIMIT $4
"""

REVOKE_KEY = f"""
UPDATE api_keys SET revoke_time = coalesce(revoke_time, now())
WHERE id = $1 AND ($2::text IS NULL OR project_id = $2)
RETURNING {_KEY_COLUMNS}
"""
"""$1 key id, $2 project scope (NULL for the admin)."""

AUTHENTICATE = """
SELECT k.id, k.name, k.project_id, k.api_rate_limit_requests, k.api_rate_limit_window_ms, k.scopes,
    p.api_rate_limit_requests AS project_limit_requests, p.api_rate_limit_window_ms AS project_limit_window_ms
FROM api_keys k JOIN projects p ON p.id = k.project_id
WHERE k.key_hash = $1 AND k.revoke_time IS NULL
"""
"""$1 key digest. No row: unknown or revoked."""


@dataclass(frozen=True)
class KeyGrant:
    """What a valid API key grants: its project, and the rate limits that apply (see Limiter.admit)."""

    key_id: str
    key_name: str
    project_id: str
    key_rate_limit: ApiRateLimit | None  # the key's own, set by the admin; None: it has none
    project_rate_limit: ApiRateLimit | None  # the project's; None: the server default
    scopes: frozenset[str] = frozenset()


def _rate_limit(row: Any, requests_column: str = "api_rate_limit_requests",
                window_column: str = "api_rate_limit_window_ms") -> ApiRateLimit | None:
    requests, window_ms = row[requests_column], row[window_column]
    if requests is None or window_ms is None:
        return None
    return ApiRateLimit(requests=int(requests), window=timedelta(milliseconds=int(window_ms)))


def _limit_args(limit: ApiRateLimit | None) -> tuple[int | None, int | None]:
    if limit is None:
        return None, None
    return limit.requests, int(limit.window.total_seconds() * 1000)


def _project(row: Any) -> Project:
    return Project(id=row["id"], slug=row["slug"], name=row["name"], create_time=row["create_time"],
                   api_rate_limit=_rate_limit(row), monthly_budget_microusd=row["monthly_budget_microusd"],
                   budget_action=row["budget_action"], month_spend_microusd=row["month_spend"])


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"], project_id=row["project_id"], name=row["name"], key_prefix=row["key_prefix"],
        create_time=row["create_time"], revoke_time=row["revoke_time"], api_rate_limit=_rate_limit(row),
        scopes=tuple(row["scopes"]),
    )


class ProjectStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, slug: str, name: str, rate_limit: ApiRateLimit | None = None) -> Project:
        row = await self._pool.fetchrow(INSERT_PROJECT, ids.new_id("proj"), slug, name, *_limit_args(rate_limit))
        if row is None:
            raise AlreadyExists("project", slug)
        return _project(row)

    async def get(self, project_id: str) -> Project | None:
        row = await self._pool.fetchrow(GET_PROJECT, project_id)
        return None if row is None else _project(row)

    async def get_by_slug(self, slug: str) -> Project | None:
        row = await self._pool.fetchrow(GET_PROJECT_BY_SLUG, slug)
        return None if row is None else _project(row)

    async def update(self, project_id: str, *, name: str | None = None, set_rate_limit: bool = False,
                     rate_limit: ApiRateLimit | None = None, set_budget: bool = False, budget: int | None = None,
                     budget_action: str | None = None) -> Project | None:
        """Changes the name (unless None), with set_rate_limit the rate limit (None: inherit), with set_budget
        the monthly budget (None: none), and the budget action (unless None)."""
        row = await self._pool.fetchrow(UPDATE_PROJECT, project_id, name is not None, name or "",
                                        set_rate_limit, *_limit_args(rate_limit), set_budget, budget,
                                        budget_action is not None, budget_action or "notify")
        return None if row is None else _project(row)

    async def list_projects(self, only: list[str] | None, after: tuple[datetime, str] | None,
                   limit: int) -> list[Project]:
        t, i = after if after else (None, None)
        rows = await self._pool.fetch(LIST_PROJECTS, only, t, i, limit)
        return [_project(r) for r in rows]

    async def create_key(self, project_id: str, name: str, prefix: str, digest: str,
                         rate_limit: ApiRateLimit | None = None, *, max_keys: int = 2**31 - 1,
                         scopes: tuple[str, ...] = ()) -> ApiKey | None:
        """The new key; None when the project has `max_keys` unrevoked keys already (or does not exist)."""
        row = await self._pool.fetchrow(INSERT_KEY, ids.new_id("key"), project_id, name, prefix, digest,
                                        *_limit_args(rate_limit), max_keys, list(scopes))
        return None if row is None else _key(row)

    async def update_key(self, key_id: str, project_id: str | None, *, name: str | None = None,
                         set_rate_limit: bool = False, rate_limit: ApiRateLimit | None = None) -> ApiKey | None:
        """Like update(), for a key; project_id scopes it to one project (None for the admin)."""
        row = await self._pool.fetchrow(UPDATE_KEY, key_id, project_id, name is not None, name or "",
                                        set_rate_limit, *_limit_args(rate_limit))
        return None if row is None else _key(row)

    async def list_keys(self, project_id: str, after: tuple[datetime, str] | None,
                        limit: int) -> list[ApiKey]:
        t, i = after if after else (None, None)
        rows = await self._pool.fetch(LIST_KEYS, project_id, t, i, limit)
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, project_id: str | None) -> ApiKey | None:
        row = await self._pool.fetchrow(REVOKE_KEY, key_id, project_id)
        return None if row is None else _key(row)

    async def authenticate(self, digest: str) -> KeyGrant | None:
        row = await self._pool.fetchrow(AUTHENTICATE, digest)
        if row is None:
            return None
        return KeyGrant(key_id=row["id"], key_name=row["name"], project_id=row["project_id"],
                        key_rate_limit=_rate_limit(row),
                        project_rate_limit=_rate_limit(row, "project_limit_requests", "project_limit_window_ms"),
                        scopes=frozenset(row["scopes"]))
