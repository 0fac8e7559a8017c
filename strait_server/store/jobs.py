"""Jobs: create, read, list, optimistic update, soft delete (which cancels the job's pending runs)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from strait_server import ids, schedule
from strait_server.errors import Aborted, AlreadyExists, NotFound
from strait_server.model import WINDOW_WAIT_PREFIX, ExecutionMode, Job, JobSpec, OverlapPolicy, RetryStrategy
from strait_server.store import runs as run_sql
from strait_server.telemetry.metrics import Metrics

_COLUMNS = """id, project_id, slug, name, description, endpoint_url, fallback_endpoint_url, execution_mode,
queue, max_attempts, timeout_ms, retry_strategy, retry_initial_ms, retry_max_ms, priority, enabled,
signing_secret, tags, metadata, version, create_time, update_time, cron, timezone, cron_overlap_policy,
next_fire_time, schedule_paused, run_ttl_ms, max_concurrency, max_concurrency_per_key, rate_limit_max,
rate_limit_window_ms, execution_window_cron, poison_pill_threshold, dedup_window_ms, debounce_window_ms,
max_run_cost_microusd"""

INSERT_JOB = f"""
INSERT INTO jobs (id, project_id, slug, name, description, endpoint_url, fallback_endpoint_url,
    execution_mode, queue, max_attempts, timeout_ms, retry_strategy, retry_initial_ms, retry_max_ms,
    priority, enabled, signing_secret, tags, metadata, cron, timezone, cron_overlap_policy, run_ttl_ms,
    max_concurrency, max_concurrency_per_key, rate_limit_max, rate_limit_window_ms, execution_window_cron,
    poison_pill_threshold, dedup_window_ms, debounce_window_ms, max_run_cost_microusd, next_fire_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
    $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)
ON CONFLICT (project_id, slug) WHERE delete_time IS NULL DO NOTHING
RETURNING {_COLUMNS}
"""
"""$1..$33 as listed. No row: the slug is taken in this project."""

GET_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND project_id = $2 AND delete_time IS NULL"
GET_BY_SLUG = f"SELECT {_COLUMNS} FROM jobs WHERE slug = $1 AND project_id = $2 AND delete_time IS NULL"

LIST_JOBS = f"""
SELECT {_COLUMNS} FROM jobs
WHERE project_id = $1 AND delete_time IS NULL
  AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3))
ORDER BY create_time, id
LIMIT $4
"""

UPDATE_JOB = f"""
UPDATE jobs SET slug = $4, name = $5, description = $6, endpoint_url = $7, fallback_endpoint_url = $8,
    execution_mode = $9, queue = $10, max_attempts = $11, timeout_ms = $12, retry_strategy = $13,
    retry_initial_ms = $14, retry_max_ms = $15, priority = $16, enabled = $17, signing_secret = $18,
    tags = $19, metadata = $20, cron = $21, timezone = $22, cron_overlap_policy = $23, run_ttl_ms = $24,
    max_concurrency = $25, max_concurrency_per_key = $26, rate_limit_max = $27, rate_limit_window_ms = $28,
    execution_window_cron = $29, poison_pill_threshold = $30, dedup_window_ms = $31, debounce_window_ms = $32,
    max_run_cost_microusd = $33,
    -- Keep the due time unless the schedule itself changed.
    next_fire_time = CASE WHEN cron = $21 AND timezone = $22 THEN next_fire_time ELSE $34 END,
    version = version + 1, update_time = now()
WHERE id = $1 AND project_id = $2 AND version = $3 AND delete_time IS NULL
RETURNING {_COLUMNS}
"""
"""$1 id, $2 project, $3 expected version, $4..$32 the new spec, $33 its first fire time."""

# After a change of limits: the job's queued runs move in or out of their gates (see strait_gate).
REGATE_QUEUED = "UPDATE run_queue q SET gate = strait_run_gate(q.run_id) WHERE q.job_id = $1"
# After the execution window changed: runs waiting for the old window become due now, and the gated claim
# checks them against the new one.
RELEASE_WINDOW_WAITS = f"""
UPDATE runs SET run_at = now(), scheduled_time = now(), update_time = now()
WHERE job_id = $1 AND status = 'delayed' AND wait_reason LIKE '{WINDOW_WAIT_PREFIX}%'
"""

DUE_SCHEDULES = """
-- Only what firing needs: a scheduler reads thousands of these per tick.
SELECT id, project_id, cron, timezone, cron_overlap_policy FROM jobs
WHERE cron <> '' AND delete_time IS NULL AND enabled AND NOT schedule_paused AND next_fire_time <= $1
ORDER BY next_fire_time
LIMIT $2
-- NO KEY UPDATE: runs inserted meanwhile (another transaction) take KEY SHARE on the job for their FK.
FOR NO KEY UPDATE SKIP LOCKED
"""
"""$1 now (the scheduler's clock), $2 limit. Locks the due scheduled jobs; other schedulers skip them."""

JOBS_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = ANY($1::text[])"

ADVANCE_SCHEDULES = """
UPDATE jobs j SET next_fire_time = v.t FROM unnest($1::text[], $2::timestamptz[]) AS v(id, t) WHERE j.id = v.id
"""

NEXT_FIRE_TIME = """
SELECT min(next_fire_time) FROM jobs
WHERE cron <> '' AND delete_time IS NULL AND enabled AND NOT schedule_paused
"""

SET_SCHEDULE_PAUSED = f"""
UPDATE jobs SET schedule_paused = $3, next_fire_time = $4, version = version + 1, update_time = now()
WHERE id = $1 AND project_id = $2 AND delete_time IS NULL AND cron <> ''
RETURNING {_COLUMNS}
"""
"""$1 job, $2 project, $3 paused, $4 next fire time (the next tick after now when resuming)."""

DELETE_JOB = f"""
UPDATE jobs SET delete_time = now(), version = version + 1, update_time = now()
WHERE id = $1 AND project_id = $2 AND delete_time IS NULL AND ($3::int IS NULL OR version = $3)
RETURNING {_COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class DueSchedule:
    id: str
    project_id: str
    cron: str
    timezone: str
    overlap: OverlapPolicy


def _job(row: Any) -> Job:
    return Job(
        id=row["id"], project_id=row["project_id"], slug=row["slug"], name=row["name"],
        description=row["description"], endpoint_url=row["endpoint_url"],
        fallback_endpoint_url=row["fallback_endpoint_url"],
        execution_mode=ExecutionMode(row["execution_mode"]), queue=row["queue"],
        max_attempts=row["max_attempts"], timeout_ms=row["timeout_ms"],
        retry_strategy=RetryStrategy(row["retry_strategy"]), retry_initial_ms=row["retry_initial_ms"],
        retry_max_ms=row["retry_max_ms"], priority=row["priority"], enabled=row["enabled"],
        signing_secret=row["signing_secret"], tags=dict(row["tags"]), metadata=dict(row["metadata"]),
        version=row["version"], create_time=row["create_time"], update_time=row["update_time"],
        cron=row["cron"], timezone=row["timezone"], cron_overlap_policy=OverlapPolicy(row["cron_overlap_policy"]),
        next_fire_time=row["next_fire_time"], schedule_paused=row["schedule_paused"], run_ttl_ms=row["run_ttl_ms"],
        max_concurrency=row["max_concurrency"], max_concurrency_per_key=row["max_concurrency_per_key"],
        rate_limit_max=row["rate_limit_max"], rate_limit_window_ms=row["rate_limit_window_ms"],
        execution_window_cron=row["execution_window_cron"], poison_pill_threshold=row["poison_pill_threshold"],
        dedup_window_ms=row["dedup_window_ms"], debounce_window_ms=row["debounce_window_ms"],
        max_run_cost_microusd=row["max_run_cost_microusd"],
    )


def _spec_args(spec: JobSpec) -> tuple[Any, ...]:
    return (
        spec.slug, spec.name, spec.description, spec.endpoint_url, spec.fallback_endpoint_url,
        spec.execution_mode.value, spec.queue, spec.max_attempts, spec.timeout_ms,
        spec.retry_strategy.value, spec.retry_initial_ms, spec.retry_max_ms, spec.priority, spec.enabled,
        spec.signing_secret, spec.tags, spec.metadata, spec.cron, spec.timezone, spec.cron_overlap_policy.value,
        spec.run_ttl_ms, spec.max_concurrency, spec.max_concurrency_per_key, spec.rate_limit_max,
        spec.rate_limit_window_ms, spec.execution_window_cron, spec.poison_pill_threshold, spec.dedup_window_ms,
        spec.debounce_window_ms, spec.max_run_cost_microusd,
    )


def _gating(spec: JobSpec) -> tuple[bool, bool, str, str]:
    """What decides the gates of the job's queued runs (see strait_run_gate)."""
    return spec.flow_controlled, spec.max_concurrency_per_key > 0, spec.execution_mode.value, spec.queue


def regates(current: Job, spec: JobSpec) -> bool:
    """Whether writing `spec` over `current` changes the gates of the job's queued runs."""
    return _gating(spec) != _gating(spec_of(current))


def first_fire_time(spec: JobSpec) -> datetime | None:
    return schedule.next_tick(spec.cron, spec.timezone, datetime.now(UTC)) if spec.cron else None


def spec_of(job: Job) -> JobSpec:
    """The user-settable part of a job (what UpdateJob starts from)."""
    return JobSpec(**{f.name: getattr(job, f.name) for f in dataclasses.fields(JobSpec)})


def _parse_etag(etag: str) -> int:
    if etag.startswith("v") and etag[1:].isdigit():
        return int(etag[1:])
    raise Aborted(f"etag {etag!r} does not match the job's current etag")


class JobStore:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics or Metrics()  # counts the runs a job deletion cancels

    async def due_schedules(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, now: datetime,
                            limit: int) -> list[DueSchedule]:
        """Inside the caller's transaction: the scheduled jobs due at `now`, locked for this scheduler."""
        rows = await conn.fetch(DUE_SCHEDULES, now, limit)
        return [DueSchedule(r["id"], r["project_id"], r["cron"], r["timezone"], OverlapPolicy(r["cron_overlap_policy"]))
                for r in rows]

    async def by_ids(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
                     job_ids: list[str]) -> list[Job]:
        return [_job(r) for r in await conn.fetch(JOBS_BY_ID, job_ids)]

    async def set_schedule_paused(self, job: Job, paused: bool) -> Job:
        """Pauses the schedule, or resumes it from the next tick after now (the job must have one)."""
        next_fire = None if paused else first_fire_time(job)
        row = await self._pool.fetchrow(SET_SCHEDULE_PAUSED, job.id, job.project_id, paused, next_fire)
        if row is None:
            raise NotFound("job", job.id)
        return _job(row)

    async def advance_schedules(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
                                next_fire_times: list[tuple[str, datetime]]) -> None:
        await conn.execute(ADVANCE_SCHEDULES, [j for j, _ in next_fire_times], [t for _, t in next_fire_times])

    async def next_fire_time(self) -> datetime | None:
        """When the next schedule is due (None: no active schedule)."""
        value = await self._pool.fetchval(NEXT_FIRE_TIME)
        return value if isinstance(value, datetime) else None

    async def create(self, project_id: str, spec: JobSpec) -> Job:
        row = await self._pool.fetchrow(INSERT_JOB, ids.new_id("job"), project_id, *_spec_args(spec),
                                        first_fire_time(spec))
        if row is None:
            raise AlreadyExists("job", spec.slug)
        return _job(row)

    async def find(self, project_id: str, *, job_id: str = "", slug: str = "") -> Job | None:
        if job_id:
            row = await self._pool.fetchrow(GET_BY_ID, job_id, project_id)
        else:
            row = await self._pool.fetchrow(GET_BY_SLUG, slug, project_id)
        return None if row is None else _job(row)

    async def get(self, project_id: str, *, job_id: str = "", slug: str = "") -> Job:
        job = await self.find(project_id, job_id=job_id, slug=slug)
        if job is None:
            raise NotFound("job", job_id or slug)
        return job

    async def list_jobs(self, project_id: str, after: tuple[datetime, str] | None, limit: int) -> list[Job]:
        t, i = after if after else (None, None)
        rows = await self._pool.fetch(LIST_JOBS, project_id, t, i, limit)
        return [_job(r) for r in rows]

    async def update(self, current: Job, spec: JobSpec, *, etag: str = "") -> Job:
        """Write `spec` if the job is still at `current`'s version (or at `etag` when given)."""
        version = _parse_etag(etag) if etag else current.version
        regate = regates(current, spec)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(UPDATE_JOB, current.id, current.project_id, version,
                                          *_spec_args(spec), first_fire_time(spec))
                if row is not None and regate:
                    await conn.execute(REGATE_QUEUED, current.id)
                if row is not None and spec.execution_window_cron != current.execution_window_cron:
                    await conn.execute(RELEASE_WINDOW_WAITS, current.id)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("job", spec.slug) from None
        if row is None:
            if await self.find(current.project_id, job_id=current.id) is None:
                raise NotFound("job", current.id)
            raise Aborted(f"job {current.id!r} changed concurrently (etag mismatch); read it again")
        return _job(row)

    async def regate(self, job_id: str) -> None:
        """Puts the job's queued runs under the gates its current limits call for."""
        await self._pool.execute(REGATE_QUEUED, job_id)

    async def delete(self, job: Job, *, etag: str = "") -> tuple[Job, list[str]]:
        """Soft-deletes the job; returns it and the ids of the runs that were canceled with it."""
        version = _parse_etag(etag) if etag else None
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(DELETE_JOB, job.id, job.project_id, version)
            if row is None:
                raise Aborted(f"job {job.id!r} changed concurrently (etag mismatch); read it again")
            canceled = await run_sql.cancel_unfinished_runs_of_job(conn, job.id, "job deleted")
        self._metrics.transitions((from_status, "canceled") for _, from_status in canceled)
        return _job(row), [run_id for run_id, _ in canceled]
