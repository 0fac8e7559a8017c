"""Workflow runs, their step runs and events: the SQL of the workflow engine and of WorkflowRunService."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from strait_server.errors import FailedPrecondition, NotFound

RUNNING, PAUSED, QUEUED, TIMED_OUT, SCHEDULED = "running", "paused", "queued", "timed_out", "scheduled"
CANCELED = "canceled"
EXPIRED = "expired"  # a job run that was not started before its TTL passed
OPEN = (RUNNING, PAUSED, QUEUED, SCHEDULED)  # a workflow run that has not ended
REOPENABLE = ("completed", "failed")  # ended runs whose steps may run again (not canceled ones)

Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# The input as its JSON text: the engine decodes it only when a template or a default input reads it (a map's
# input often holds its whole list of items), and the API sends it on as it is.
RUN_COLUMNS = """id, project_id, workflow_id, version, status, input::text AS input, error, idempotency_key, steps_open,
steps_failed, event_seq, create_time, start_time, finish_time, update_time, parent_workflow_run_id, parent_step_run_id,
depth, concurrency_key, deadline_time, trace_parent, scheduled_time, disabled_steps"""
STEP_COLUMNS = """id, workflow_run_id, step_ref, status, skip_reason, parents_total, parents_done, parents_ok,
parents_failed, parents_skipped, job_run_id, output, error, create_time, start_time, finish_time, waiting_reason,
wake_time, map_index, map_total, map_started, map_done, map_failed, child_workflow_run_id"""
EVENT_COLUMNS = "workflow_run_id, seq, type, step_ref, from_status, to_status, message, create_time"

INSERT_RUN = f"""
INSERT INTO workflow_runs (id, project_id, workflow_id, version, status, input, idempotency_key, steps_open,
    start_time, parent_workflow_run_id, parent_step_run_id, depth, concurrency_key, trace_parent, scheduled_time,
    disabled_steps)
VALUES ($1, $2, $3, $4, $11, $5, $6, $7, CASE WHEN $11 = 'running' THEN now() END, $8, $9, $10, $12, $13, $14,
    $15)
ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
RETURNING {RUN_COLUMNS}
"""
"""$8/$9 the parent run and step run of a child run (NULL: none), $10 its depth, $11 its status (running,
queued or scheduled), $12 its concurrency key (NULL: none), $13 the W3C traceparent its job runs continue
('': none), $14 when a scheduled run starts (NULL: not scheduled), $15 the steps disabled for the run.
No row: the idempotency key names an earlier run."""

BY_KEY = f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE workflow_id = $1 AND idempotency_key = $2"

OPEN_TOP_LEVEL = """
SELECT id, idempotency_key FROM workflow_runs
WHERE workflow_id = $1 AND status IN ('running', 'paused', 'queued') AND parent_workflow_run_id IS NULL
ORDER BY id
"""
"""$1 workflow: its runs that have not ended, other than child runs of sub-workflow steps (which belong to their
parent run): what a schedule's overlap policy looks at."""

INSERT_STEPS = """
INSERT INTO workflow_step_runs (id, workflow_run_id, step_ref, status, parents_total)
SELECT v.id, $1, v.ref, 'pending', v.total FROM unnest($2::text[], $3::text[], $4::int[]) AS v(id, ref, total)
"""

GET_RUN = f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1 AND project_id = $2"
LOCK_RUNS = f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

LIST_RUNS = f"""
SELECT {RUN_COLUMNS} FROM workflow_runs
WHERE project_id = $1 AND ($2::text IS NULL OR workflow_id = $2) AND ($3::text[] IS NULL OR status = ANY($3))
  AND ($4::timestamptz IS NULL OR (create_time, id) < ($4, $5))
ORDER BY create_time DESC, id DESC
LIMIT $6
"""

STEPS_OF_RUN = f"SELECT {STEP_COLUMNS} FROM workflow_step_runs WHERE workflow_run_id = $1 AND map_index = -1"
"""The run's steps, without map instances (served by the step key: steps come before instances)."""

STEP_WITH_INSTANCES = f"""
SELECT {STEP_COLUMNS} FROM workflow_step_runs
WHERE workflow_run_id = $1 AND step_ref = $2 AND map_index > $3
ORDER BY map_index LIMIT $4
"""
"""One step of the run (map_index -1) and its map instances, in item order: $3 after this index, $4 at most."""
STEP_OF_RUN = f"""
SELECT {STEP_COLUMNS} FROM workflow_step_runs s
WHERE workflow_run_id = $1 AND step_ref = $2 AND map_index = -1
  AND EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = s.workflow_run_id AND r.project_id = $3)
"""
STEP_ORDER = """
SELECT jsonb_path_query_array(v.definition, '$.steps[*].ref')
FROM workflow_runs r JOIN workflow_versions v ON v.workflow_id = r.workflow_id AND v.version = r.version
WHERE r.id = $1
"""
"""The step refs of a run's version, in definition order."""

STEPS_OF_RUNS = """
SELECT workflow_run_id, id, step_ref, status, output, error, job_run_id, wake_time, child_workflow_run_id, start_time
FROM workflow_step_runs WHERE workflow_run_id = ANY($1::text[]) AND map_index = -1
"""
"""What the engine needs of the steps of runs it locked: read by a statement after the lock's, since a
statement that waited for a lock still reads other rows as they were when it started."""

TAKE_PROGRESS = """
WITH taken AS (
    DELETE FROM workflow_progress WHERE id = ANY(ARRAY(
        SELECT id FROM workflow_progress ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING step_run_id, run_id, event_id, child_run_id
)
SELECT s.id, s.workflow_run_id, s.step_ref, s.map_index, r.status AS run_status, r.output, r.error, t.event_id,
    -- A subquery, not a join: a hash join would scan every event kept.
    (SELECT e.payload FROM events e WHERE e.id = t.event_id) AS event_payload,
    t.child_run_id, c.status AS child_status, c.output AS child_output, c.error AS child_error
FROM taken t JOIN workflow_step_runs s ON s.id = t.step_run_id LEFT JOIN runs r ON r.id = t.run_id
    LEFT JOIN LATERAL (SELECT status, output, error FROM workflow_runs WHERE id = t.child_run_id) c ON true
"""
"""$1 batch size. The job runs of steps that ended, and the events that resolved waiting steps, taken for the
engine (deleted: the caller's transaction decides whether they were handled)."""

SET_STEPS = """
WITH upd AS (
UPDATE workflow_step_runs s
SET status = v.status, skip_reason = v.skip_reason, output = coalesce(v.output::jsonb, s.output),
    error = v.error, update_time = now(),
    start_time = CASE WHEN v.status = 'running' THEN now() ELSE s.start_time END,
    finish_time = CASE WHEN v.status IN ('completed', 'failed', 'skipped', 'canceled') THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS v(id, from_status, status, skip_reason, output, error)
WHERE s.id = v.id AND s.status = v.from_status
RETURNING s.id, v.from_status
), unwaited AS (
    DELETE FROM event_waits w USING upd WHERE upd.from_status = 'waiting' AND w.step_run_id = upd.id
)
SELECT id FROM upd
"""
"""Compare-and-set of step statuses: only rows still in their expected status change; returns those ids."""

ADD_TO_COUNTERS = f"""
UPDATE workflow_step_runs s
SET parents_done = s.parents_done + v.done, parents_ok = s.parents_ok + v.ok,
    parents_failed = s.parents_failed + v.failed, parents_skipped = s.parents_skipped + v.skipped,
    update_time = now()
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[]) AS v(run_id, ref, done, ok, failed,
                                                                                       skipped)
WHERE s.workflow_run_id = v.run_id AND s.step_ref = v.ref AND s.map_index = -1 AND s.status = 'pending'
RETURNING {STEP_COLUMNS}
"""
"""Adds how parents ended to their children's counters (pending children only; the caller holds the run's
lock, so two transactions never count for one child at once)."""

CLOSE_AND_RECORD = """
WITH upd AS (
    UPDATE workflow_runs SET steps_open = steps_open - $2, steps_failed = steps_failed + $3,
        event_seq = event_seq + cardinality($4::text[]), update_time = now()
    WHERE id = $1
    RETURNING steps_open, steps_failed, event_seq, project_id
), ev AS (
    INSERT INTO workflow_run_events (workflow_run_id, seq, type, step_ref, from_status, to_status, message,
        project_id)
    SELECT $1, upd.event_seq - cardinality($4::text[]) + v.n, v.type, v.ref, v.from_status, v.to_status, v.message,
        upd.project_id
    FROM upd, unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
        WITH ORDINALITY AS v(type, ref, from_status, to_status, message, n)
)
SELECT steps_open, steps_failed FROM upd
"""
"""$1 run, $2 steps that ended, $3 of them failed (blocking), $4..$8 the events to add in order (type, step,
from, to, message). One round trip for the bookkeeping of a move: counts, sequences and events."""

FINISH_RUN = """
WITH fin AS (
    UPDATE workflow_runs SET status = $2, error = coalesce(nullif(error, ''), $3), output = $4, finish_time = now(),
        update_time = now()
    WHERE id = $1 AND status IN ('running', 'paused', 'queued', 'scheduled')
    RETURNING id, parent_step_run_id, concurrency_key
), up AS (
    -- A child run's end moves its parent's step on, like the end of a job run.
    INSERT INTO workflow_progress (step_run_id, child_run_id)
    SELECT parent_step_run_id, id FROM fin WHERE parent_step_run_id IS NOT NULL
)
-- Wakes the engine: a parent step moves on, or (payload 'slot': a full pass) a queued run of the key may start.
SELECT pg_notify('strait_workflow_progress', CASE WHEN concurrency_key IS NULL THEN '' ELSE 'slot' END) FROM fin
WHERE parent_step_run_id IS NOT NULL OR concurrency_key IS NOT NULL
"""
"""$1 run, $2 final status, $3 error, $4 output."""

SET_CHILD = """
UPDATE workflow_step_runs SET status = 'running', child_workflow_run_id = $2, start_time = now(), update_time = now()
WHERE id = $1 AND status IN ('pending', 'ready')
"""

SET_RUN_STATUS = """
UPDATE workflow_runs SET status = $2,
    start_time = CASE WHEN $2 IN ('running', 'paused') THEN coalesce(start_time, now()) ELSE start_time END,
    update_time = now()
WHERE id = $1
"""
"""$1 run, $2 its new status (a run starts when it first becomes running)."""

IS_FUTURE = "SELECT $1::timestamptz > now()"
"""Whether a time is still ahead, by the database's clock."""

DUE_SCHEDULED = f"""
SELECT {RUN_COLUMNS} FROM workflow_runs
WHERE status = 'scheduled' AND scheduled_time <= coalesce($1, now())
ORDER BY scheduled_time, id LIMIT $2
FOR UPDATE SKIP LOCKED
"""
"""$1 now (NULL: the database's clock), $2 limit: scheduled runs whose time came, locked."""

LOCK_CONCURRENCY_KEY = "SELECT pg_advisory_xact_lock(hashtextextended('strait-wf-key:' || $1 || ':' || $2, 0))"
"""Serialises the admission of a workflow's runs with one concurrency key (triggers and dequeues)."""

HOLDING_SLOTS = """
SELECT id FROM workflow_runs
WHERE workflow_id = $1 AND concurrency_key = $2 AND status IN ('running', 'paused') AND concurrency_key IS NOT NULL
ORDER BY create_time, id
"""
"""The runs of a workflow and key holding a slot, oldest first."""

QUEUED_KEYS = """
SELECT workflow_id, concurrency_key
FROM (SELECT DISTINCT workflow_id, concurrency_key FROM workflow_runs WHERE status = 'queued') k
ORDER BY workflow_id COLLATE "C", concurrency_key COLLATE "C" LIMIT $1
"""
"""In code point order, as passes.start_due sorts them: passes take several keys' locks in one order."""

OLDEST_QUEUED = f"""
SELECT {RUN_COLUMNS} FROM workflow_runs
WHERE workflow_id = $1 AND concurrency_key = $2 AND status = 'queued'
ORDER BY coalesce(scheduled_time, create_time), id LIMIT $3
FOR UPDATE SKIP LOCKED
"""
"""The queued runs of a key in the order they came to want a slot: when triggered, or when scheduled."""
KEEP_ERROR = "UPDATE workflow_runs SET error = $2, update_time = now() WHERE id = $1"
"""The failure that ends the run, written while its on_failure_step runs (FINISH_RUN keeps it)."""

CANCEL_OPEN_STEPS = """
WITH old AS (
    SELECT id, status FROM workflow_step_runs
    WHERE workflow_run_id = $1 AND status IN ('pending', 'ready', 'running', 'waiting')
), upd AS (
    UPDATE workflow_step_runs s SET status = 'canceled', error = $2, finish_time = now(), update_time = now()
    FROM old WHERE s.id = old.id
    RETURNING s.step_ref, s.map_index, old.status, s.job_run_id, s.child_workflow_run_id
), unwaited AS (
    DELETE FROM event_waits WHERE workflow_run_id = $1
)
SELECT step_ref, map_index, status, job_run_id, child_workflow_run_id FROM upd
"""
"""Steps and map instances (map_index >= 0) that were open, now canceled."""

START_MAP = """
WITH node AS (
    UPDATE workflow_step_runs SET status = 'running', map_total = cardinality($3::text[]), start_time = now(),
        update_time = now()
    WHERE id = $1 AND status IN ('pending', 'ready')
    RETURNING workflow_run_id, step_ref
)
INSERT INTO workflow_step_runs (id, workflow_run_id, step_ref, status, parents_total, map_index, item)
SELECT v.id, node.workflow_run_id, node.step_ref, 'pending', 0, v.n - 1, v.item
FROM node, unnest($3::text[], $2::jsonb[]) WITH ORDINALITY AS v(id, item, n)
"""
"""$1 the map step, $2 its items, $3 the instances' new ids: the step runs, its instances wait to start."""

NEXT_INSTANCES = """
SELECT id, map_index, item FROM workflow_step_runs
WHERE workflow_run_id = $1 AND step_ref = $2 AND map_index >= 0 AND status = 'pending'
ORDER BY map_index LIMIT $3
"""

COUNT_MAP = """
UPDATE workflow_step_runs SET map_started = map_started + $2, map_done = map_done + $3, map_failed = map_failed + $4,
    update_time = now()
WHERE id = $1
RETURNING map_total, map_started, map_done, map_failed
"""
"""$1 a map step: adds instances started, ended and failed; returns its counts."""

END_INSTANCES = """
UPDATE workflow_step_runs s SET status = v.status, output = v.output::jsonb, error = v.error, finish_time = now(),
    update_time = now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS v(id, status, output, error)
WHERE s.id = v.id AND s.status = 'running'
RETURNING s.id
"""
"""Map instances whose job runs ended (only those still running change; returns them)."""

MAP_OUTPUTS = """
SELECT coalesce(jsonb_agg(output ORDER BY map_index), '[]'::jsonb) FROM workflow_step_runs
WHERE workflow_run_id = $1 AND step_ref = $2 AND map_index >= 0
"""
"""A map step's output: its instances' outputs in item order."""

RESET_STEPS = f"""
WITH instances AS (
    DELETE FROM workflow_step_runs WHERE workflow_run_id = $1 AND step_ref = ANY($2::text[]) AND map_index >= 0
)
UPDATE workflow_step_runs s SET id = v.new_id, status = 'pending', skip_reason = '', output = NULL, error = '',
    job_run_id = NULL, child_workflow_run_id = NULL, waiting_reason = '', wake_time = NULL, start_time = NULL,
    finish_time = NULL, map_total = 0,
    map_started = 0, map_done = 0, map_failed = 0, parents_done = v.done, parents_ok = v.ok,
    parents_failed = v.failed, parents_skipped = v.skipped, update_time = now()
FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::int[], $7::int[])
     AS v(ref, new_id, done, ok, failed, skipped)
WHERE s.workflow_run_id = $1 AND s.map_index = -1 AND s.step_ref = v.ref
RETURNING {STEP_COLUMNS}
"""
"""$1 run, $2 steps that start over, $3 their new step run ids (the job runs and progress of the old ones stay
theirs), $4..$7 their parents' outcomes as they stand. Map instances are dropped."""

REOPEN_RUN = """
UPDATE workflow_runs SET status = CASE WHEN status = 'paused' THEN 'paused' ELSE 'running' END, error = '',
    finish_time = NULL, steps_open = $2, steps_failed = $3, update_time = now()
WHERE id = $1
"""
"""$1 run, $2 steps open, $3 steps failed: counts recomputed after steps started over."""

SET_WAITING = """
WITH upd AS (
    UPDATE workflow_step_runs SET status = 'waiting', waiting_reason = $2,
        wake_time = coalesce($3, now() + $7::bigint * interval '1 millisecond'), start_time = now(),
        update_time = now()
    WHERE id = $1 AND status IN ('pending', 'ready')
    RETURNING id, workflow_run_id
)
INSERT INTO event_waits (step_run_id, workflow_run_id, project_id, event_key, match)
SELECT upd.id, upd.workflow_run_id, $4, $5, $6 FROM upd WHERE $5::text IS NOT NULL
"""
"""$1 step run, $2 waiting reason, $3 wake time, or $7 milliseconds from now (both NULL: none), $4 project,
$5 the event key it waits for (NULL: none), $6 the event's match."""

LOCK_EVENT_KEY = "SELECT pg_advisory_xact_lock_shared(hashtextextended('strait-event:' || $1 || ':' || $2, 0))"
"""Taken by a step that starts waiting for the key, under SendEvent's exclusive lock: an event is either
seen by the step's look back, or sees the step waiting."""

EVENTS_SINCE = """
SELECT id, payload FROM events
WHERE project_id = $1 AND key = $2 AND create_time >= now() - $3::bigint * interval '1 ms'
ORDER BY create_time, id LIMIT 1000
"""

DUE_TIMERS = """
SELECT DISTINCT workflow_run_id FROM (
    SELECT workflow_run_id FROM workflow_step_runs
    WHERE status = 'waiting' AND wake_time <= coalesce($1, now()) ORDER BY wake_time LIMIT $2) due
"""
"""$1 now (NULL: the database's clock), $2 limit: the runs with waiting steps whose timer is due."""

NEXT_TIMER = """
SELECT least(
    (SELECT min(wake_time) FROM workflow_step_runs WHERE status = 'waiting' AND wake_time IS NOT NULL),
    (SELECT min(deadline_time) FROM workflow_runs WHERE status IN ('running', 'paused') AND deadline_time IS NOT NULL),
    (SELECT min(scheduled_time) FROM workflow_runs WHERE status = 'scheduled')
) - coalesce($1, now())
"""
"""How long until the next timer is due: a waiting step's, a run's deadline, or a scheduled run's start
(NULL: none)."""

SET_DEADLINE = "UPDATE workflow_runs SET deadline_time = now() + $2::bigint * interval '1 millisecond' WHERE id = $1"

DUE_DEADLINES = """
SELECT id FROM workflow_runs
WHERE status IN ('running', 'paused') AND deadline_time <= coalesce($1, now())
ORDER BY deadline_time LIMIT $2
"""
"""$1 now (NULL: the database's clock), $2 limit: the runs past their workflow's timeout."""


STATUS_FEED = """
SELECT e.xid::text AS xid, r.workflow_id, e.workflow_run_id, e.seq, e.type, e.step_ref, e.from_status,
    e.to_status, e.message, e.create_time
FROM workflow_run_events e JOIN workflow_runs r ON r.id = e.workflow_run_id
WHERE e.project_id = $1 AND e.type = 'run_status'
  AND (e.xid, e.workflow_run_id, e.seq) > ($2::text::xid8, $3::text, $4::bigint)
  AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
  AND ($5::text IS NULL OR r.workflow_id = $5)
ORDER BY e.xid, e.workflow_run_id, e.seq
LIMIT $6
"""
"""The project's workflow-run status changes in commit order (see store/feed.py for why by transaction id):
$2..$4 the position after which to read (xid as text, run, sequence), $5 a workflow (NULL: all), $6 limit."""

EVENTS_AFTER = f"""
SELECT {EVENT_COLUMNS} FROM workflow_run_events WHERE workflow_run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""

RUN_PROGRESS = "SELECT status, event_seq FROM workflow_runs WHERE id = $1 AND project_id = $2"

RUNNING_MAPS = """
SELECT step_ref, map_total, map_started, map_done, map_failed FROM workflow_step_runs
WHERE workflow_run_id = $1 AND map_index = -1 AND status = 'running' AND map_total > 0
"""
"""The counts of a run's running map steps."""




@dataclass(frozen=True)
class WorkflowRunRow:
    id: str
    project_id: str
    workflow_id: str
    version: int
    status: str
    input: str  # JSON text
    error: str
    idempotency_key: str
    steps_open: int
    steps_failed: int
    event_seq: int
    create_time: datetime
    start_time: datetime | None
    finish_time: datetime | None
    update_time: datetime
    parent_workflow_run_id: str | None = None
    parent_step_run_id: str | None = None
    depth: int = 0
    concurrency_key: str | None = None
    deadline_time: datetime | None = None
    trace_parent: str = ""
    scheduled_time: datetime | None = None  # when a run created scheduled starts
    disabled_steps: list[str] = field(default_factory=list)  # skipped when they would run (step_overrides)


@dataclass(frozen=True)
class StepRunRow:
    id: str
    workflow_run_id: str
    step_ref: str
    status: str
    skip_reason: str
    parents_total: int
    parents_done: int
    parents_ok: int
    parents_failed: int
    parents_skipped: int
    job_run_id: str | None
    output: Any
    error: str
    create_time: datetime
    start_time: datetime | None
    finish_time: datetime | None
    waiting_reason: str
    wake_time: datetime | None
    map_index: int
    map_total: int
    map_started: int
    map_done: int
    map_failed: int
    child_workflow_run_id: str | None


class StepState(NamedTuple):
    """What the engine needs of a step run."""

    id: str
    step_ref: str
    status: str
    output: Any
    error: str
    job_run_id: str | None = None
    wake_time: datetime | None = None
    child_workflow_run_id: str | None = None
    start_time: datetime | None = None


class MapCountsRow(NamedTuple):
    step_ref: str
    total: int
    started: int
    done: int
    failed: int


@dataclass(frozen=True)
class WorkflowRunEventRow:
    workflow_run_id: str
    seq: int
    type: str
    step_ref: str
    from_status: str
    to_status: str
    message: str
    create_time: datetime


@dataclass(frozen=True, order=True)
class StatusFeedCursor:
    """A position in the workflow-run status feed: after this event of this transaction."""

    xid: int
    workflow_run_id: str
    seq: int


@dataclass(frozen=True)
class StatusChangeRow:
    cursor: StatusFeedCursor
    workflow_id: str
    event: WorkflowRunEventRow


def run_row(row: Any) -> WorkflowRunRow:
    return WorkflowRunRow(**dict(row))


def step_row(row: Any) -> StepRunRow:
    return StepRunRow(**dict(row))


class WorkflowRunStore:
    """Reads for WorkflowRunService; the engine's writes go through the statements above on its connection."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, project_id: str, run_id: str) -> WorkflowRunRow:
        row = await self._pool.fetchrow(GET_RUN, run_id, project_id)
        if row is None:
            raise NotFound("workflow run", run_id)
        return run_row(row)

    async def list_runs(self, project_id: str, *, workflow_id: str | None, statuses: list[str] | None,
                        cursor: tuple[datetime, str] | None, limit: int) -> list[WorkflowRunRow]:
        t, i = cursor if cursor else (None, None)
        rows = await self._pool.fetch(LIST_RUNS, project_id, workflow_id, statuses, t, i, limit)
        return [run_row(r) for r in rows]

    async def steps(self, project_id: str, run_id: str) -> list[StepRunRow]:
        """The run's steps in the order of its definition (no map instances)."""
        await self.get(project_id, run_id)
        return await _steps_in_order(self._pool, run_id)

    async def snapshot(self, project_id: str, run_id: str) -> tuple[WorkflowRunRow, list[StepRunRow]]:
        """The run and its steps as of one moment (one snapshot of the database): the run's event_seq is the
        last event they reflect."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(GET_RUN, run_id, project_id)
            if row is None:
                raise NotFound("workflow run", run_id)
            return run_row(row), await _steps_in_order(conn, run_id)

    async def running_maps(self, run_id: str) -> list[MapCountsRow]:
        """The counts of each running map step of the run."""
        return [MapCountsRow(*r) for r in await self._pool.fetch(RUNNING_MAPS, run_id)]

    async def step_with_instances(self, project_id: str, run_id: str, ref: str, after: int,
                                  limit: int) -> list[StepRunRow]:
        """A step (map_index -1) and its map instances after index `after`, in item order, up to `limit`."""
        await self.get(project_id, run_id)
        return [step_row(r) for r in await self._pool.fetch(STEP_WITH_INSTANCES, run_id, ref, after, limit)]

    async def step(self, project_id: str, run_id: str, ref: str) -> StepRunRow:
        row = await self._pool.fetchrow(STEP_OF_RUN, run_id, ref, project_id)
        if row is None:
            await self.get(project_id, run_id)
            raise NotFound("step", ref)
        return step_row(row)

    async def events_after(self, project_id: str, run_id: str, after: int, limit: int) -> list[WorkflowRunEventRow]:
        rows = await self._pool.fetch(EVENTS_AFTER, run_id, after, limit)
        if not rows:
            await self.get(project_id, run_id)  # NOT_FOUND for a run that is not there
        return [WorkflowRunEventRow(**dict(r)) for r in rows]

    async def status_changes(self, project_id: str, after: StatusFeedCursor, workflow_id: str | None,
                             limit: int) -> list[StatusChangeRow]:
        rows = await self._pool.fetch(STATUS_FEED, project_id, str(after.xid), after.workflow_run_id, after.seq,
                                      workflow_id, limit)
        return [StatusChangeRow(StatusFeedCursor(int(r["xid"]), r["workflow_run_id"], r["seq"]), r["workflow_id"],
                                WorkflowRunEventRow(**{k: r[k] for k in EVENT_COLUMNS.split(", ")}))
                for r in rows]

    async def progress(self, project_id: str, run_id: str) -> tuple[str, int]:
        row = await self._pool.fetchrow(RUN_PROGRESS, run_id, project_id)
        if row is None:
            raise NotFound("workflow run", run_id)
        return str(row["status"]), int(row["event_seq"])


async def _steps_in_order(db: Executor, run_id: str) -> list[StepRunRow]:
    rows = [step_row(r) for r in await db.fetch(STEPS_OF_RUN, run_id)]
    refs = await db.fetchval(STEP_ORDER, run_id)
    position = {ref: i for i, ref in enumerate(refs or [])}
    return sorted(rows, key=lambda s: position.get(s.step_ref, len(position)))


def require_open(run: WorkflowRunRow) -> None:
    if run.status not in OPEN:
        raise FailedPrecondition(f"workflow run {run.id!r} is {run.status}", subject=run.id)
