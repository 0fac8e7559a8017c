"""Workflows: definitions with immutable versions, optimistic updates (etag "r<revision>"), soft delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from strait_server import ids
from strait_server.errors import Aborted, AlreadyExists, NotFound

_COLUMNS = """w.id, w.project_id, w.slug, w.name, w.description, w.tags, w.enabled, w.current_version, w.revision,
w.create_time, w.update_time"""

INSERT_WORKFLOW = f"""
WITH w AS (
    INSERT INTO workflows (id, project_id, slug, name, description, tags, enabled, current_version)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
    ON CONFLICT (project_id, slug) WHERE delete_time IS NULL DO NOTHING
    RETURNING *
), v AS (
    INSERT INTO workflow_versions (workflow_id, version, definition, definition_hash)
    SELECT id, 1, $8, $9 FROM w
    RETURNING version, definition, create_time
)
SELECT {_COLUMNS}, v.version, v.definition, v.create_time AS version_time FROM w, v
"""
"""$1 id, $2 project, $3 slug, $4 name, $5 description, $6 tags, $7 enabled, $8 definition, $9 its hash.
No row: the slug is taken in this project."""

_SELECTOR = "w.project_id = $1 AND w.delete_time IS NULL AND (w.id = $2 OR ($2 = '' AND w.slug = $3))"

GET_WORKFLOW = f"""
SELECT {_COLUMNS}, v.version, v.definition, v.create_time AS version_time
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id
    AND v.version = CASE WHEN $4 > 0 THEN $4 ELSE w.current_version END
WHERE {_SELECTOR}
"""
"""$1 project, $2 id (or ''), $3 slug, $4 version (0: current)."""

EXISTS = f"SELECT w.id, w.current_version FROM workflows w WHERE {_SELECTOR}"

LIST_WORKFLOWS = f"""
SELECT {_COLUMNS}, v.version, v.definition, v.create_time AS version_time
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version
WHERE w.project_id = $1 AND w.delete_time IS NULL
  AND ($2::timestamptz IS NULL OR (w.create_time, w.id) > ($2, $3))
ORDER BY w.create_time, w.id
LIMIT $4
"""

LOCK_FOR_UPDATE = """
SELECT w.id, w.revision, w.current_version, v.definition_hash
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version
WHERE w.id = $1 AND w.project_id = $2 AND w.delete_time IS NULL
FOR NO KEY UPDATE OF w
"""

ADD_VERSION = """
INSERT INTO workflow_versions (workflow_id, version, definition, definition_hash) VALUES ($1, $2, $3, $4)
"""

UPDATE_ATTRIBUTES = """
UPDATE workflows SET name = $2, description = $3, tags = $4, enabled = $5, current_version = $6,
    revision = revision + 1, update_time = now()
WHERE id = $1
"""

DELETE_WORKFLOW = f"""
UPDATE workflows w SET delete_time = now(), update_time = now(), revision = revision + 1
WHERE w.id = $1 AND w.project_id = $2 AND w.delete_time IS NULL AND ($3::int IS NULL OR w.revision = $3)
RETURNING {_COLUMNS}
"""

LIST_VERSIONS = """
SELECT version, definition, create_time FROM workflow_versions
WHERE workflow_id = $1 AND ($2::int IS NULL OR version < $2)
ORDER BY version DESC
LIMIT $3
"""


@dataclass(frozen=True)
class Attributes:
    """What a workflow is, apart from its definition (changing these writes no version)."""

    slug: str
    name: str
    description: str
    tags: dict[str, str]
    enabled: bool


@dataclass(frozen=True)
class StoredWorkflow:
    id: str
    project_id: str
    attributes: Attributes
    current_version: int
    revision: int
    create_time: datetime
    update_time: datetime
    # The definition of `version` (the current one unless an earlier one was asked for).
    version: int
    definition: dict[str, Any]
    version_time: datetime

    @property
    def etag(self) -> str:
        return f"r{self.revision}"


@dataclass(frozen=True)
class StoredVersion:
    version: int
    definition: dict[str, Any]
    create_time: datetime


def _workflow(row: Any, definition: Any = None) -> StoredWorkflow:
    return StoredWorkflow(
        id=row["id"], project_id=row["project_id"],
        attributes=Attributes(row["slug"], row["name"], row["description"], dict(row["tags"]), row["enabled"]),
        current_version=row["current_version"], revision=row["revision"], create_time=row["create_time"],
        update_time=row["update_time"], version=row["version"] if definition is None else row["current_version"],
        definition=row["definition"] if definition is None else definition,
        version_time=row["version_time"] if definition is None else row["update_time"])


def parse_etag(etag: str) -> int:
    if etag.startswith("r") and etag[1:].isdigit():
        return int(etag[1:])
    raise Aborted(f"etag {etag!r} does not match the workflow's current etag")


class WorkflowStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, project_id: str, attributes: Attributes, definition: dict[str, Any],
                     digest: bytes) -> StoredWorkflow:
        a = attributes
        row = await self._pool.fetchrow(INSERT_WORKFLOW, ids.new_id("wf"), project_id, a.slug, a.name,
                                        a.description, a.tags, a.enabled, definition, digest)
        if row is None:
            raise AlreadyExists("workflow", a.slug)
        return _workflow(row)

    async def get(self, project_id: str, *, workflow_id: str = "", slug: str = "", version: int = 0) -> StoredWorkflow:
        row = await self._pool.fetchrow(GET_WORKFLOW, project_id, workflow_id, slug, version)
        if row is None:
            found = await self._pool.fetchrow(EXISTS, project_id, workflow_id, slug)
            if found is not None and version:
                raise NotFound("workflow version", f"{workflow_id or slug}@{version}")
            raise NotFound("workflow", workflow_id or slug)
        return _workflow(row)

    async def list_workflows(self, project_id: str, cursor: tuple[datetime, str] | None,
                             limit: int) -> list[StoredWorkflow]:
        t, i = cursor if cursor else (None, None)
        return [_workflow(r) for r in await self._pool.fetch(LIST_WORKFLOWS, project_id, t, i, limit)]

    async def update(self, current: StoredWorkflow, attributes: Attributes, definition: dict[str, Any],
                     digest: bytes, *, etag: str = "") -> StoredWorkflow:
        """Writes the attributes, and a new version when the definition changed; ABORTED when the workflow
        changed since `current` was read (or since `etag`)."""
        revision = parse_etag(etag) if etag else current.revision
        a = attributes
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(LOCK_FOR_UPDATE, current.id, current.project_id)
            if row is None:
                raise NotFound("workflow", current.id)
            if row["revision"] != revision:
                raise Aborted(f"workflow {current.id!r} changed concurrently (etag mismatch); read it again")
            version = row["current_version"]
            if bytes(row["definition_hash"]) != digest:
                version += 1
                await conn.execute(ADD_VERSION, current.id, version, definition, digest)
            await conn.execute(UPDATE_ATTRIBUTES, current.id, a.name, a.description, a.tags, a.enabled,
                               version)
        return await self.get(current.project_id, workflow_id=current.id)

    async def delete(self, current: StoredWorkflow, *, etag: str = "") -> StoredWorkflow:
        revision = parse_etag(etag) if etag else None
        row = await self._pool.fetchrow(DELETE_WORKFLOW, current.id, current.project_id, revision)
        if row is None:
            raise Aborted(f"workflow {current.id!r} changed concurrently (etag mismatch); read it again")
        return _workflow(row, current.definition)

    async def versions(self, workflow_id: str, before: int | None, limit: int) -> list[StoredVersion]:
        rows = await self._pool.fetch(LIST_VERSIONS, workflow_id, before, limit)
        return [StoredVersion(r["version"], r["definition"], r["create_time"]) for r in rows]

    async def exists(self, project_id: str, *, workflow_id: str = "", slug: str = "") -> bool:
        return await self._pool.fetchrow(EXISTS, project_id, workflow_id, slug) is not None

    async def existing_jobs(self, project_id: str, job_ids: list[str], slugs: list[str]) -> tuple[set[str], set[str]]:
        """Which of these job ids and slugs name live jobs of the project."""
        rows = await self._pool.fetch(
            "SELECT id, slug FROM jobs WHERE project_id = $1 AND delete_time IS NULL"
            " AND (id = ANY($2::text[]) OR slug = ANY($3::text[]))", project_id, job_ids, slugs)
        return {r["id"] for r in rows}, {r["slug"] for r in rows}
