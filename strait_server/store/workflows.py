"""Workflows: definitions with immutable versions, optimistic updates (etag "r<revision>"), soft delete, and
cron schedules (an attribute: a change of schedule writes no version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from strait_server import ids, schedule
from strait_server.errors import Aborted, AlreadyExists, NotFound
from strait_server.model import OverlapPolicy

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_COLUMNS = """w.id, w.project_id, w.slug, w.name, w.description, w.tags, w.enabled, w.current_version, w.revision,
w.create_time, w.update_time, w.cron, w.timezone, w.cron_overlap_policy, w.schedule_input, w.next_fire_time,
w.schedule_paused"""

INSERT_WORKFLOW = f"""
WITH w AS (
    INSERT INTO workflows (id, project_id, slug, name, description, tags, enabled, current_version, cron, timezone,
        cron_overlap_policy, schedule_input, next_fire_time)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $10, $11, $12, $13, $14)
    ON CONFLICT (project_id, slug) WHERE delete_time IS NULL DO NOTHING
    RETURNING *
), v AS (
    INSERT INTO workflow_versions (workflow_id, version, definition, definition_hash)
    SELECT id, 1, $8, $9 FROM w
    RETURNING version, definition, create_time
)
SELECT {_COLUMNS}, v.version, v.definition, v.create_time AS version_time FROM w, v
"""
"""$1 id, $2 project, $3 slug, $4 name, $5 description, $6 tags, $7 enabled, $8 definition, $9 its hash, $10 cron,
$11 timezone, $12 overlap policy, $13 schedule input, $14 first fire time. No row: the slug is taken in this
project."""

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
    cron = $7, timezone = $8, cron_overlap_policy = $9, schedule_input = $10,
    -- Keep the due time unless the schedule itself changed.
    next_fire_time = CASE WHEN cron = $7 AND timezone = $8 THEN next_fire_time ELSE $11 END,
    revision = revision + 1, update_time = now()
WHERE id = $1
"""
"""$1 id, $2..$5 attributes, $6 current version, $7..$10 the schedule, $11 its first fire time (if it changed)."""

DELETE_WORKFLOW = f"""
UPDATE workflows w SET delete_time = now(), update_time = now(), revision = revision + 1
WHERE w.id = $1 AND w.project_id = $2 AND w.delete_time IS NULL AND ($3::int IS NULL OR w.revision = $3)
RETURNING {_COLUMNS}
"""

DUE_SCHEDULES = """
-- Only what firing needs. NO KEY UPDATE: other schedulers skip these rows, UpdateWorkflow waits for the pass.
SELECT id, project_id, slug, current_version, cron, timezone, cron_overlap_policy, schedule_input FROM workflows
WHERE cron <> '' AND delete_time IS NULL AND enabled AND NOT schedule_paused AND next_fire_time <= $1
ORDER BY next_fire_time
LIMIT $2
FOR NO KEY UPDATE SKIP LOCKED
"""
"""$1 now (the scheduler's clock), $2 limit. Locks the due scheduled workflows; other schedulers skip them."""

ADVANCE_SCHEDULES = """
UPDATE workflows w SET next_fire_time = v.t FROM unnest($1::text[], $2::timestamptz[]) AS v(id, t) WHERE w.id = v.id
"""

NEXT_FIRE_TIME = """
SELECT min(next_fire_time) FROM workflows
WHERE cron <> '' AND delete_time IS NULL AND enabled AND NOT schedule_paused
"""

SET_SCHEDULE_PAUSED = f"""
WITH w AS (
    UPDATE workflows SET schedule_paused = $3, next_fire_time = $4, revision = revision + 1, update_time = now()
    WHERE id = $1 AND project_id = $2 AND delete_time IS NULL AND cron <> ''
    RETURNING *
)
SELECT {_COLUMNS}, v.version, v.definition, v.create_time AS version_time
FROM w JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version
"""
"""$1 workflow, $2 project, $3 paused, $4 next fire time (the next tick after now when resuming)."""

LIST_VERSIONS = """
SELECT version, definition, create_time FROM workflow_versions
WHERE workflow_id = $1 AND ($2::int IS NULL OR version < $2)
ORDER BY version DESC
LIMIT $3
"""


@dataclass(frozen=True)
class Schedule:
    """A workflow's cron schedule (`cron` empty: none). Each tick starts a run of the workflow's current version
    with `input` (JSON object text as the client gave it; empty: {})."""

    cron: str = ""
    timezone: str = "UTC"
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    input: str = ""

    def first_fire_time(self) -> datetime | None:
        """The first tick after now (None without a schedule)."""
        return schedule.next_tick(self.cron, self.timezone, datetime.now(UTC)) if self.cron else None


NO_SCHEDULE = Schedule()


@dataclass(frozen=True)
class Attributes:
    """What a workflow is, apart from its definition (changing these writes no version)."""

    slug: str
    name: str
    description: str
    tags: dict[str, str]
    enabled: bool
    schedule: Schedule = NO_SCHEDULE


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
    # When the schedule fires next (None: no schedule, or paused), and whether it is paused.
    next_fire_time: datetime | None = None
    schedule_paused: bool = False

    @property
    def etag(self) -> str:
        return f"r{self.revision}"


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A scheduled workflow that is due, locked by the scheduler's pass: what firing it needs."""

    id: str
    project_id: str
    slug: str
    version: int  # the current version: the one a tick runs
    cron: str
    timezone: str
    overlap: OverlapPolicy
    input: str


@dataclass(frozen=True)
class StoredVersion:
    version: int
    definition: dict[str, Any]
    create_time: datetime


def _workflow(row: Any, definition: Any = None) -> StoredWorkflow:
    plan = Schedule(row["cron"], row["timezone"], OverlapPolicy(row["cron_overlap_policy"]), row["schedule_input"])
    return StoredWorkflow(
        id=row["id"], project_id=row["project_id"],
        attributes=Attributes(row["slug"], row["name"], row["description"], dict(row["tags"]), row["enabled"], plan),
        current_version=row["current_version"], revision=row["revision"], create_time=row["create_time"],
        update_time=row["update_time"], version=row["version"] if definition is None else row["current_version"],
        definition=row["definition"] if definition is None else definition,
        version_time=row["version_time"] if definition is None else row["update_time"],
        next_fire_time=row["next_fire_time"], schedule_paused=row["schedule_paused"])


def _schedule_args(s: Schedule) -> tuple[Any, ...]:
    return s.cron, s.timezone, s.overlap.value, s.input


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
                                        a.description, a.tags, a.enabled, definition, digest,
                                        *_schedule_args(a.schedule), a.schedule.first_fire_time())
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
                               version, *_schedule_args(a.schedule), a.schedule.first_fire_time())
        return await self.get(current.project_id, workflow_id=current.id)

    async def delete(self, current: StoredWorkflow, *, etag: str = "") -> StoredWorkflow:
        revision = parse_etag(etag) if etag else None
        row = await self._pool.fetchrow(DELETE_WORKFLOW, current.id, current.project_id, revision)
        if row is None:
            raise Aborted(f"workflow {current.id!r} changed concurrently (etag mismatch); read it again")
        return _workflow(row, current.definition)

    async def set_schedule_paused(self, current: StoredWorkflow, paused: bool) -> StoredWorkflow:
        """Pauses the schedule, or resumes it from the next tick after now (the workflow must have one)."""
        next_fire = None if paused else current.attributes.schedule.first_fire_time()
        row = await self._pool.fetchrow(SET_SCHEDULE_PAUSED, current.id, current.project_id, paused, next_fire)
        if row is None:
            raise NotFound("workflow", current.id)
        return _workflow(row)

    @staticmethod
    async def due_schedules(conn: Conn, now: datetime, limit: int) -> list[DueSchedule]:
        """Inside the caller's transaction: the scheduled workflows due at `now`, locked for this scheduler."""
        return [DueSchedule(r["id"], r["project_id"], r["slug"], r["current_version"], r["cron"], r["timezone"],
                            OverlapPolicy(r["cron_overlap_policy"]), r["schedule_input"])
                for r in await conn.fetch(DUE_SCHEDULES, now, limit)]

    @staticmethod
    async def advance_schedules(conn: Conn, next_fire_times: list[tuple[str, datetime]]) -> None:
        await conn.execute(ADVANCE_SCHEDULES, [w for w, _ in next_fire_times], [t for _, t in next_fire_times])

    async def next_fire_time(self) -> datetime | None:
        """When the next workflow schedule is due (None: no active schedule)."""
        value = await self._pool.fetchval(NEXT_FIRE_TIME)
        return value if isinstance(value, datetime) else None

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
