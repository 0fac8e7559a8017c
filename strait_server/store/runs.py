"""Runs outside the dispatch hot path: insert (trigger, replay), read, list, cancel, events."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import asyncpg

from strait_server import ids
from strait_server.errors import FailedPrecondition, NotFound
from strait_server.model import (
    CANCELABLE,
    TERMINAL,
    TRACE_CONTEXT_KEY,
    AttemptRecord,
    EventType,
    Job,
    NewRun,
    Run,
    RunEvent,
    RunStatus,
    TriggerRequest,
    sources_of,
)
from strait_server.queue import ClaimedRun, claimed_from_row
from strait_server.store.fragments import enqueue, expires_at, gate_of, insert_events, literal, status_changes
from strait_server.telemetry import Telemetry

RUN_COLUMNS = """id, project_id, job_id, status, attempt, max_attempts, priority, timeout_ms, payload, output,
error, error_class, scheduled_time, create_time, update_time, start_time, finish_time, idempotency_key,
tags, metadata, attempt_history, replay_of, expires_at, concurrency_key, wait_reason, cost_microusd, lost_count"""

_EVENT_COLUMNS = "run_id, job_id, seq, type, from_status, to_status, attempt, message, data, create_time"

INSERT_RUNS = f"""
WITH j AS (
    SELECT id, project_id, max_attempts, priority, timeout_ms, tags, run_ttl_ms, max_concurrency,
        max_concurrency_per_key, rate_limit_max, execution_window_cron, execution_mode, queue
    FROM jobs
    WHERE project_id = $1 AND delete_time IS NULL AND (id = $2 OR ($2 = '' AND slug = $3))
      -- Unless the caller read the job and applied its rules ($19): deduplicated and debounced triggers need
      -- the job's settings first (RunStore.insert, debounce); replays are allowed of disabled jobs.
      AND ($19 OR (enabled AND dedup_window_ms = 0 AND debounce_window_ms = 0))
), ins AS (
    INSERT INTO runs (id, project_id, job_id, status, max_attempts, priority, timeout_ms, payload,
        run_at, scheduled_time, tags, metadata, event_seq, expires_at, concurrency_key, idempotency_key, replay_of,
        workflow_step_run_id, retry_strategy, retry_initial_ms, retry_max_ms, ttl_until_start)
    SELECT v.id, j.project_id, j.id,
        CASE WHEN v.sched > now() THEN 'delayed' ELSE 'queued' END,
        coalesce(v.max_attempts, j.max_attempts), coalesce(v.priority, j.priority),
        coalesce(v.timeout_ms, j.timeout_ms), v.payload,
        greatest(coalesce(v.sched, now()), now()), coalesce(v.sched, now()),
        j.tags || coalesce(v.tags, '{{}}')::jsonb, coalesce(v.metadata, '{{}}')::jsonb, 1,
        {expires_at("greatest(coalesce(v.sched, now()), now())", "coalesce(v.ttl_ms, j.run_ttl_ms)")},
        coalesce(v.ckey, ''), coalesce(v.idem, ''), $18, v.step_run, v.retry_strategy, v.retry_initial_ms,
        v.retry_max_ms, coalesce(v.until_start, false)
    -- unnest pads a NULL array with NULLs: a column no run sets is sent as one NULL, not 1,000.
    FROM j, unnest($4::text[], $5::int[], $6::int[], $7::bigint[], $8::text[], $9::timestamptz[],
                   $10::text[], $11::text[], $12::int[], $13::bigint[], $14::text[], $17::text[], $20::text[],
                   $21::text[], $22::bigint[], $23::bigint[], $24::bool[])
         AS v(id, max_attempts, priority, timeout_ms, payload, sched, tags, metadata, ord, ttl_ms, ckey, idem,
              step_run, retry_strategy, retry_initial_ms, retry_max_ms, until_start)
    ORDER BY v.ord
    -- Empty tags come back as NULL: decoding '{{}}' 1,000 times showed in batch profiles.
    RETURNING id, project_id, job_id, status, max_attempts, priority, timeout_ms, scheduled_time, create_time,
        nullif(tags, '{{}}') AS tags, run_at, expires_at, concurrency_key, workflow_step_run_id
), ev AS (
    {status_changes("ins", "''", "status", attempt="0", seq="1")}
), ready AS (
    {enqueue(
        "ins, j", gate_of("j", "ins.concurrency_key"), where=f"ins.status = {literal(RunStatus.QUEUED)}",
        columns="ins.")}
), steps AS (
    -- The run of a workflow step: from now the step is running it (one statement writes both).
    UPDATE workflow_step_runs s SET status = 'running', job_run_id = ins.id, start_time = now(), update_time = now()
    FROM ins WHERE $20::text[] IS NOT NULL AND s.id = ins.workflow_step_run_id
        AND s.status IN ('pending', 'ready')
), req AS (
    -- A request id used before violates the key: the statement fails and writes nothing.
    INSERT INTO trigger_requests (project_id, request_id, selector, run_ids)
    SELECT j.project_id, $15, $16, $4 FROM j WHERE $15::text IS NOT NULL
)
-- In the order RunStore._write unpacks them.
SELECT id, project_id, job_id, status, max_attempts, priority, timeout_ms, scheduled_time, create_time, tags,
    expires_at
FROM ins
"""
"""Every new run but the directly dispatched and cron-fired ones is written here. $1 project, $2 job id (or
''), $3 slug, $4..$14 and $17 per-run arrays (NULL overrides take the job's value; $17 idempotency keys),
$15 request id (or NULL) and $16 its selector (see trigger_requests), $18 the replayed run (or ''), $19 the
caller read the job and applied its rules, $20 the workflow step runs they execute (NULL: none), $21..$23 their
retry strategies and delays (a workflow step's retry policy; NULL: the job's), $24 whether their TTL ends at
their first start (a workflow step's schedule_to_start_timeout; NULL: false). Reads the job
and writes the runs, their first events and ready rows in one round trip; no row when the job is missing or
deleted, or (without $19) disabled, or deduplicates or debounces its triggers."""


def _insert_claimed(route: str) -> str:
    """The statement that writes one run already claimed (see INSERT_DISPATCHING), for the jobs `route` admits."""
    return f"""
WITH j AS (
    SELECT id, project_id, max_attempts, priority, timeout_ms, tags, endpoint_url, fallback_endpoint_url,
        signing_secret, retry_strategy, retry_initial_ms, retry_max_ms, run_ttl_ms, poison_pill_threshold
    FROM jobs
    WHERE project_id = $1 AND delete_time IS NULL AND enabled AND (id = $2 OR ($2 = '' AND slug = $3))
      AND dedup_window_ms = 0 AND debounce_window_ms = 0
      {route}
), ins AS (
    INSERT INTO runs (id, project_id, job_id, status, attempt, max_attempts, priority, timeout_ms, payload,
        run_at, scheduled_time, start_time, tags, metadata, lease_owner, deadline, event_seq, expires_at,
        concurrency_key)
    SELECT $4, j.project_id, j.id, 'executing', 1, coalesce($5, j.max_attempts), coalesce($6, j.priority),
        coalesce($7, j.timeout_ms), $8, now(), now(), now(), j.tags || $9::jsonb, $10::jsonb, $11,
        now() + coalesce($7, j.timeout_ms) * interval '1 millisecond', 2,
        -- Started at once, but a retry waiting in the queue can still expire.
        {expires_at("now()", "coalesce($12, j.run_ttl_ms)")}, $13
    FROM j
    RETURNING id, project_id, job_id, status, attempt, max_attempts, priority, timeout_ms, payload, metadata,
        error, scheduled_time, create_time, start_time, tags, lease_owner, deadline, expires_at, concurrency_key
), lease AS (
    INSERT INTO run_leases (run_id, owner, deadline, job_id, concurrency_key)
    SELECT id, lease_owner, deadline, job_id, concurrency_key FROM ins
), ev AS (
    {status_changes(
        "(SELECT id, project_id, job_id, s.seq, s.attempt, s.from_status, s.to_status FROM ins, (VALUES "
        f"(1, 0, '', {literal(RunStatus.QUEUED)}), (2, 1, {literal(RunStatus.QUEUED)}, {literal(RunStatus.EXECUTING)})"
        ") AS s(seq, attempt, from_status, to_status)) e", "from_status", "to_status", seq="seq")}
), req AS (
    INSERT INTO trigger_requests (project_id, request_id, selector, run_ids)
    SELECT project_id, $14, $15, ARRAY[id] FROM ins WHERE $14::text IS NOT NULL
)
-- The job's retry policy: a run written here is never a workflow step's (INSERT_RUNS writes those), so it has
-- no retry policy of its own.
SELECT ins.*, j.endpoint_url, j.fallback_endpoint_url, j.signing_secret, j.retry_strategy, j.retry_initial_ms,
    j.retry_max_ms, j.poison_pill_threshold
FROM ins, j
"""


INSERT_DISPATCHING = _insert_claimed(f"""
      -- Flow-controlled jobs always go through the gated claim, which enforces their limits (strait_gate is
      -- the one definition of flow control; it names a gate for any limit, per-key ones included), and worker
      -- jobs through the worker plane (INSERT_ASSIGNING).
      AND {gate_of("", "''")} IS NULL
      -- Only when nothing claimable is waiting: a new run must not overtake older queued runs.
      AND NOT EXISTS (SELECT 1 FROM run_queue q WHERE q.gate IS NULL AND q.run_at <= now()
                      AND (SELECT j2.enabled AND j2.delete_time IS NULL FROM jobs j2 WHERE j2.id = q.job_id))""")
"""$1 project, $2 job id (or ''), $3 slug, $4 run id, $5 max_attempts, $6 priority, $7 timeout_ms (NULL: the
job's), $8 payload, $9 tags, $10 metadata, $11 dispatcher, $12 ttl_ms (NULL: the job's), $13 concurrency key,
$14 request id (or NULL) and $15 its selector.
When the ready queue holds nothing claimable, writes the run already claimed by that dispatcher (queued and
executing events, lease) in the same durable commit as the trigger; no row otherwise, and the caller enqueues
it the usual way (always for flow-controlled, deduplicated or debounced jobs)."""


INSERT_ASSIGNING = _insert_claimed(f"""
      -- A worker job whose route ($16, 'w/<queue>/<job id>': see strait_gate) a worker connected to the
      -- trigger's process handles with a free slot, and nothing of that route waiting before it.
      AND {gate_of("", "''")} = $16
      AND NOT EXISTS (SELECT 1 FROM run_queue q WHERE q.gate = $16 AND q.run_at <= now())""")
"""INSERT_DISPATCHING's parameters, $11 the worker plane of this process, and $16 the route: the run written
already claimed, for that worker plane to assign at once; no row otherwise (the caller enqueues it)."""


CLAIM_IDEMPOTENCY_KEYS = """
INSERT INTO idempotency_keys AS k (scope, key, run_id)
SELECT v.scope, v.key, v.run_id FROM unnest($1::text[], $2::text[], $3::text[]) AS v(scope, key, run_id)
ON CONFLICT (scope, key) DO UPDATE SET run_id = EXCLUDED.run_id, create_time = now()
    WHERE CASE WHEN k.scope LIKE 'dedup:%'
               -- A dedup key is reusable once the job's dedup window has passed.
               THEN k.create_time < now() - (SELECT j.dedup_window_ms FROM jobs j
                                             WHERE j.id = substr(k.scope, 7)) * interval '1 millisecond'
               -- An idempotency key is reusable once its run finished more than 24 hours ago.
               ELSE EXISTS (SELECT 1 FROM runs r WHERE r.id = k.run_id
                            AND r.finish_time < now() - interval '24 hours') END
RETURNING scope, key, run_id
"""
"""$1 scopes ("<job id>", "replay:<run id>" or "dedup:<job id>"), $2 keys, $3 new run ids. Returns the keys
this transaction won."""

READ_IDEMPOTENCY_KEYS = """
SELECT k.scope, k.key, k.run_id FROM idempotency_keys k
JOIN unnest($1::text[], $2::text[]) AS v(scope, key) ON k.scope = v.scope AND k.key = v.key
"""

REMEMBER_REQUEST = """
INSERT INTO trigger_requests (project_id, request_id, selector, run_ids, outcomes) VALUES ($1, $2, $3, $4, $5)
"""
"""Inside a trigger's transaction; a request id used before violates the key and rolls the trigger back."""

READ_REQUEST = "SELECT selector, run_ids, outcomes FROM trigger_requests WHERE project_id = $1 AND request_id = $2"

GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND project_id = $2"
GET_RUNS = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1::text[]) AND project_id = $2"

LIST_RUNS = f"""
WITH listed AS (
    SELECT id AS listed_id, create_time AS listed_time,
        -- Read from the values' headers, without fetching them. The jsonb columns count as stored
        -- (compressed, maybe): an estimate, which only bounds what a page reads.
        octet_length(payload) + coalesce(octet_length(output), 0) + octet_length(error) + pg_column_size(tags)
            + pg_column_size(metadata) + pg_column_size(attempt_history) AS listed_bytes
    FROM runs
    WHERE project_id = $1
      AND ($2::text IS NULL OR job_id = $2)
      AND ($3::text[] IS NULL OR status = ANY($3::text[]))
      AND ($4::timestamptz IS NULL OR create_time > $4)
      AND ($5::timestamptz IS NULL OR create_time < $5)
      AND ($6::timestamptz IS NULL OR (create_time, id) < ($6, $7))
      AND ($10::jsonb IS NULL OR tags @> $10)
    ORDER BY create_time DESC, id DESC
    LIMIT $8
), sized AS (
    SELECT listed_id,
        sum(listed_bytes) OVER (ORDER BY listed_time DESC, listed_id DESC ROWS UNBOUNDED PRECEDING)
            - listed_bytes AS bytes_before
    FROM listed
)
-- By key with an array, not a join: a join may be planned as a scan of every run (see queue.py, CLAIM).
SELECT {RUN_COLUMNS}, (SELECT count(*) FROM listed) AS listed_count FROM runs
WHERE id = ANY(ARRAY(SELECT listed_id FROM sized WHERE bytes_before < $9)) AND project_id = $1
ORDER BY create_time DESC, id DESC
"""
"""$1 project, $2 job, $3 statuses, $4/$5 create-time range, $6/$7 keyset cursor, $8 limit, $10 tags (all of
them, as a jsonb object), $9 bytes: the
runs read stop at the first whose estimated size brings the total to $9 or more (that one included).
listed_count: how many runs the count limit alone gives (more than the rows returned: the byte bound stopped)."""

CANCEL_RUNS = f"""
WITH old AS (
    SELECT id, status FROM runs
    WHERE ($1::text[] IS NULL OR id = ANY($1::text[])) AND ($2::text IS NULL OR job_id = $2)
      AND ($3::text IS NULL OR project_id = $3) AND status = ANY($4::text[])
      AND ($6::text IS NULL OR id <> $6)
    FOR UPDATE
), upd AS (
    UPDATE runs r SET status = 'canceled', error = $5, finish_time = now(), update_time = now(),
        lease_owner = NULL, deadline = NULL, event_seq = r.event_seq + 1
    FROM old WHERE r.id = old.id
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, old.status AS from_status
), unqueued AS (
    -- By key with an array, not a join: see queue.py (CLAIM).
    DELETE FROM run_queue q WHERE q.run_id = ANY(ARRAY(SELECT id FROM upd))
), released AS (
    DELETE FROM run_leases l WHERE l.run_id = ANY(ARRAY(SELECT id FROM upd))
)
{status_changes("upd", "from_status", RunStatus.CANCELED, message="$5", returning="run_id, from_status")}
"""
"""$1 run ids or NULL, $2 job id or NULL, $3 project or NULL, $4 cancelable statuses, $5 reason,
$6 a run to leave alone or NULL."""

FIRE_SCHEDULED = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS v(job_id, run_id, tick)
), ins AS (
    INSERT INTO runs (id, project_id, job_id, status, max_attempts, priority, timeout_ms, payload, run_at,
        scheduled_time, idempotency_key, tags, metadata, event_seq, expires_at)
    SELECT v.run_id, j.project_id, j.id, 'queued', j.max_attempts, j.priority, j.timeout_ms, '{{}}', now(), now(),
        'cron:' || v.tick, j.tags, jsonb_build_object('triggered_by', 'cron', 'scheduled_tick', v.tick), 1,
        {expires_at("now()", "j.run_ttl_ms")}
    FROM v JOIN jobs j ON j.id = v.job_id
    RETURNING id, project_id, job_id, priority, run_at
), ev AS (
    {status_changes("ins", "''", RunStatus.QUEUED, attempt="0", seq="1")}
), ready AS (
    {enqueue(
        "ins JOIN jobs j ON j.id = ins.job_id", gate_of("j", "''"), columns="ins.")}
)
SELECT id, job_id FROM ins
"""
"""$1 job ids, $2 new run ids, $3 ticks (ISO 8601). One run per due schedule in one statement (the cron
scheduler's batch, for jobs whose overlap policy needs no look at their other runs). Exactly once without an
idempotency key: the caller holds the jobs' row locks and advances their next_fire_time in the same commit."""

LOCK_DEBOUNCE_KEYS = """
SELECT count(pg_advisory_xact_lock(hashtextextended('strait-debounce:' || $1 || ':' || k, 0)))
FROM (SELECT k FROM unnest($2::text[]) AS k ORDER BY k) s
"""
"""$1 job, $2 debounce keys: serialises debounced triggers per key until commit."""

JOIN_DEBOUNCED = f"""
WITH cur AS (
    SELECT r.id FROM debounce_runs d JOIN runs r ON r.id = d.run_id
    WHERE d.job_id = $1 AND d.debounce_key = $2 AND r.status = 'delayed'
    -- Promotion (PROMOTE_DELAYED) skips a run locked here; once promoted, this trigger starts a new one.
    FOR UPDATE OF r
), upd AS (
    UPDATE runs r SET payload = $3, run_at = now() + $4 * interval '1 millisecond',
        scheduled_time = now() + $4 * interval '1 millisecond',
        expires_at = r.expires_at + (now() + $4 * interval '1 millisecond' - r.scheduled_time),
        update_time = now(), event_seq = r.event_seq + 1
    FROM cur WHERE r.id = cur.id
    RETURNING r.*
), ev AS (
    {insert_events(
        "upd", EventType.DEBOUNCED, message="'a later trigger replaced the payload and pushed the run back'")}
)
SELECT {RUN_COLUMNS} FROM upd
"""
"""$1 job, $2 debounce key, $3 payload, $4 window ms. The key's pending run, with the new payload, due a window
from now; no row when the key has none still waiting."""

SET_DEBOUNCED = """
INSERT INTO debounce_runs (job_id, debounce_key, run_id) SELECT $1, k, r FROM unnest($2::text[], $3::text[]) AS v(k, r)
ON CONFLICT (job_id, debounce_key) DO UPDATE SET run_id = EXCLUDED.run_id
"""

HAS_ACTIVE = "SELECT EXISTS (SELECT 1 FROM runs WHERE job_id = $1 AND NOT status = ANY($2::text[]))"
RUN_PROGRESS = "SELECT status, event_seq FROM runs WHERE id = $1 AND project_id = $2"
REPLAY_OF = "SELECT id FROM runs WHERE replay_of = $1 AND project_id = $2 ORDER BY create_time, id LIMIT 1"

LIST_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM run_events
WHERE run_id = $1 AND project_id = $2 AND seq > $3
ORDER BY seq
LIMIT $4
"""

LIST_EVENTS_PAGE = f"""
WITH listed AS (
    SELECT seq AS listed_seq,
        -- Read from the values' headers, without fetching them; data counts as stored (compressed, maybe).
        octet_length(message) + pg_column_size(data) AS listed_bytes
    FROM run_events
    WHERE run_id = $1 AND project_id = $2 AND seq > $3
    ORDER BY seq
    LIMIT $4
), sized AS (
    SELECT listed_seq,
        sum(listed_bytes) OVER (ORDER BY listed_seq ROWS UNBOUNDED PRECEDING) - listed_bytes AS bytes_before
    FROM listed
)
-- By key with an array, as in LIST_RUNS.
SELECT {_EVENT_COLUMNS}, (SELECT count(*) FROM listed) AS listed_count FROM run_events
WHERE run_id = $1 AND seq = ANY(ARRAY(SELECT listed_seq FROM sized WHERE bytes_before < $5))
ORDER BY seq
"""
"""LIST_EVENTS for ListRunEvents, with LIST_RUNS's byte bound ($5) and listed_count."""


def run_from_row(row: Any) -> Run:
    history = row["attempt_history"]
    return Run(
        id=row["id"], project_id=row["project_id"], job_id=row["job_id"], status=RunStatus(row["status"]),
        attempt=row["attempt"], max_attempts=row["max_attempts"], priority=row["priority"],
        timeout_ms=row["timeout_ms"], payload=row["payload"], output=row["output"], error=row["error"],
        error_class=row["error_class"], scheduled_time=row["scheduled_time"],
        create_time=row["create_time"], update_time=row["update_time"], start_time=row["start_time"],
        finish_time=row["finish_time"], idempotency_key=row["idempotency_key"], tags=dict(row["tags"]),
        metadata=visible_metadata(row["metadata"]),
        attempts=[
            AttemptRecord(
                attempt=a["attempt"], status_code=a["status_code"], duration_ms=a["duration_ms"],
                error=a["error"], endpoint_url=a["endpoint_url"],
                start_time=datetime.fromisoformat(a["start_time"]) if a.get("start_time") else None,
            )
            for a in history
        ],
        replay_of=row["replay_of"], expires_at=row["expires_at"], concurrency_key=row["concurrency_key"],
        wait_reason=row["wait_reason"], cost_microusd=row["cost_microusd"], lost_count=row["lost_count"],
    )


def visible_metadata(stored: dict[str, str]) -> dict[str, str]:
    """A run's metadata as users see it: without the trace context Strait keeps there."""
    metadata = dict(stored)
    metadata.pop(TRACE_CONTEXT_KEY, None)
    return metadata


_STATUSES = {s.value: s for s in RunStatus}


def _column(values: list[Any]) -> list[Any] | None:
    """A per-run array parameter, or None (one NULL for the statement to pad) when no run sets it."""
    return values if any(v is not None for v in values) else None


def _metadata_json(metadata: dict[str, str], trace: dict[str, str]) -> str:
    if trace:
        return json.dumps({**metadata, **trace})
    return json.dumps(metadata) if metadata else "{}"


def _event(row: Any) -> RunEvent:
    return RunEvent(
        run_id=row["run_id"], job_id=row["job_id"], seq=row["seq"], type=row["type"],
        from_status=row["from_status"], to_status=row["to_status"], attempt=row["attempt"],
        message=row["message"], data=json.dumps(row["data"]), create_time=row["create_time"],
    )


async def cancel_unfinished_runs_of_job(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, job_id: str,
                                       reason: str) -> list[tuple[str, str]]:
    """Cancels every run of a job that has not finished (an executing one's late result is ignored).
    Returns (run id, status it was canceled from) pairs."""
    rows = await conn.fetch(CANCEL_RUNS, None, job_id, None, CANCELABLE, reason, None)
    return [(r["run_id"], r["from_status"]) for r in rows]


async def cancel_runs(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, run_ids: list[str],
                      reason: str) -> list[tuple[str, str]]:
    """Cancels those of these runs that have not finished (a late result of an executing one is ignored).
    Returns (run id, status it was canceled from) pairs."""
    rows = await conn.fetch(CANCEL_RUNS, run_ids, None, None, CANCELABLE, reason, None)
    return [(r["run_id"], r["from_status"]) for r in rows]


class RepeatedRequest(Exception):
    """The trigger's request_id was used before in its project: nothing was written."""


@contextmanager
def _new_request() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "trigger_requests_pkey":
            raise RepeatedRequest() from None
        raise


def _outcome(i: Inserted) -> str:
    return "b" if i.debounced else "d" if i.deduplicated else "r" if i.repeat else "n"


# Inserted's (repeat, deduplicated, debounced) for each letter of trigger_requests.outcomes.
_FROM_OUTCOME = {"n": (False, False, False), "r": (True, False, False), "d": (False, True, False),
                 "b": (False, False, True)}


class Inserted(NamedTuple):  # a tuple: a batch makes 1,000, and a frozen dataclass is slow to build
    run: Run
    repeat: bool  # an idempotency key matched: `run` existed already
    deduplicated: bool = False  # the job's dedup window matched: `run` existed already
    debounced: bool = False  # joined the job's pending debounced run (`run`, with this trigger's payload)


# Sees a trigger's results before they commit; raising rolls the trigger back (nothing written).
ResultCheck = Callable[[list[Inserted]], None]

T = TypeVar("T")


class Listed(NamedTuple, Generic[T]):
    items: list[T]
    # The list's byte bound stopped it before its count limit: more items follow.
    cut: bool


Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def write_runs(executor: Executor, project_id: str, job_id: str, slug: str, runs: list[NewRun],
                      new_ids: list[str], trace: dict[str, str], *, request: TriggerRequest | None = None,
                      replay_of: str = "", checked: bool = False) -> list[Run] | None:
    """The one way new runs are written (but for direct dispatch and cron fires, which have their own
    statements built from the same fragments): INSERT_RUNS, and the runs as stored. None when the statement
    found no job it may write runs of (see INSERT_RUNS)."""
    if not runs:
        return []
    rows = await executor.fetch(
        INSERT_RUNS, project_id, job_id, slug, new_ids,
        _column([r.max_attempts or None for r in runs]), _column([r.priority for r in runs]),
        _column([r.timeout_ms or None for r in runs]), [r.payload for r in runs],
        _column([r.scheduled_time for r in runs]),
        _column([json.dumps(r.tags) if r.tags else None for r in runs]),
        _column([_metadata_json(r.metadata, trace) if r.metadata or trace else None for r in runs]),
        list(range(len(runs))), _column([r.ttl_ms for r in runs]),
        _column([r.concurrency_key or None for r in runs]), *_request_args(request),
        _column([r.idempotency_key or None for r in runs]), replay_of, checked,
        _column([r.workflow_step_run_id or None for r in runs]), _column([r.retry_strategy for r in runs]),
        _column([r.retry_initial_ms for r in runs]), _column([r.retry_max_ms for r in runs]),
        _column([r.ttl_until_start or None for r in runs]))
    if not rows:
        return None
    created = []
    statuses = _STATUSES
    # Unpacked by position and looked up in a dict: this loop runs 1,000 times per BatchTriggerJob.
    for new, (run_id, project, job, status, max_attempts, priority, timeout_ms, scheduled, create_time, tags,
              expires) in zip(runs, rows, strict=True):
        created.append(Run(
            id=run_id, project_id=project, job_id=job, status=statuses[status], attempt=0,
            max_attempts=max_attempts, priority=priority, timeout_ms=timeout_ms, payload=new.payload, output=None,
            error="", error_class="", scheduled_time=scheduled, create_time=create_time, update_time=create_time,
            start_time=None, finish_time=None, idempotency_key=new.idempotency_key, tags=tags or {},
            metadata=dict(new.metadata) if new.metadata else {}, attempts=[], replay_of=replay_of,
            expires_at=expires, concurrency_key=new.concurrency_key))
    return created


def _found(created: list[Run] | None, job: Job) -> list[Run]:
    """Runs written for a job the caller read: gone meanwhile (deleted) when none could be."""
    if created is None:
        raise NotFound("job", job.id)
    return created


def _request_args(request: TriggerRequest | None) -> tuple[str | None, str | None]:
    return (None, None) if request is None else (request.request_id, request.selector)


async def _remember(conn: asyncpg.pool.PoolConnectionProxy, project_id: str, request: TriggerRequest | None,
                    out: list[Inserted]) -> None:
    """Records a trigger call's answer under its request id, in the trigger's transaction."""
    if request is not None:
        outcomes = "".join(_outcome(i) for i in out)
        await conn.execute(REMEMBER_REQUEST, project_id, request.request_id, request.selector,
                           [i.run.id for i in out], None if outcomes.strip("n") == "" else outcomes)


def _listed(rows: list[Any], item: Callable[[Any], T]) -> Listed[T]:
    return Listed([item(r) for r in rows], bool(rows) and len(rows) < rows[0]["listed_count"])


def _key_of(job: Job, new: NewRun, idempotency_scope: str) -> tuple[str, str] | None:
    """The (scope, key) that makes this trigger a repeat of an earlier one, if any: its idempotency key, or
    with the job's dedup window its dedup key (or a digest of its canonical payload)."""
    if new.idempotency_key:
        return (idempotency_scope or job.id, new.idempotency_key)
    if job.dedup_window_ms:
        if new.dedup_key:
            return (f"dedup:{job.id}", "key:" + new.dedup_key)
        try:
            canonical = json.dumps(json.loads(new.payload or "{}"), sort_keys=True, separators=(",", ":"))
        except RecursionError:  # nested too deeply to normalise here: such a payload repeats only as its exact text
            canonical = new.payload
        return (f"dedup:{job.id}", "payload:" + hashlib.sha256(canonical.encode()).hexdigest())
    return None


class RunStore:
    def __init__(self, pool: asyncpg.Pool, telemetry: Telemetry | None = None) -> None:
        self._pool = pool
        telemetry = telemetry or Telemetry()
        # Counts the transitions of the runs written here; traces triggers (see strait_server/telemetry).
        self._metrics = telemetry.metrics
        self._tracing = telemetry.tracing

    async def insert_for_job(self, project_id: str, job_id: str, slug: str, runs: list[NewRun],
                             request: TriggerRequest | None = None) -> list[Run] | None:
        """Runs without idempotency keys, for an enabled job named by id or slug that neither deduplicates nor
        debounces; None when there is none. Raises RepeatedRequest when `request` was made before."""
        with self._tracing.trigger(job_id or slug, len(runs)) as trace, _new_request():
            created = await write_runs(self._pool, project_id, job_id, slug, runs, ids.new_ids("run", len(runs)),
                                        trace, request=request)
        if created is not None:
            self._metrics.transitions(("", r.status.value) for r in created)
        return created

    async def insert_dispatching(self, project_id: str, job_id: str, slug: str, new: NewRun, owner: str,
                                 request: TriggerRequest | None = None, *,
                                 route: str | None = None) -> tuple[Run, ClaimedRun] | None:
        """One run, written already claimed by dispatcher `owner` (with a `route`: by the worker plane
        `owner`, for a worker job of that route); None when it must be queued instead. Raises RepeatedRequest
        when `request` was made before."""
        statement, route_arg = (INSERT_DISPATCHING, ()) if route is None else (INSERT_ASSIGNING, (route,))
        with self._tracing.trigger(job_id or slug, 1) as trace, _new_request():
            started = time.time_ns()
            row = await self._pool.fetchrow(
                statement, project_id, job_id, slug, ids.new_id("run"), new.max_attempts, new.priority,
                new.timeout_ms, new.payload, new.tags, {**new.metadata, **trace}, owner, new.ttl_ms,
                new.concurrency_key, *_request_args(request), *route_arg)
            if row is not None:
                self._tracing.claimed_direct(row["id"], started, time.time_ns())
        if row is None:
            return None
        self._metrics.transitions((("", "queued"), ("queued", "executing")))
        run = Run(id=row["id"], project_id=row["project_id"], job_id=row["job_id"], status=RunStatus.EXECUTING,
                  attempt=1, max_attempts=row["max_attempts"], priority=row["priority"],
                  timeout_ms=row["timeout_ms"], payload=new.payload, output=None, error="", error_class="",
                  scheduled_time=row["scheduled_time"], create_time=row["create_time"],
                  update_time=row["create_time"], start_time=row["start_time"], finish_time=None,
                  idempotency_key="", tags=row["tags"], metadata=dict(new.metadata), attempts=[], replay_of="",
                  expires_at=row["expires_at"], concurrency_key=new.concurrency_key)
        return run, claimed_from_row(row)

    async def insert(self, job: Job, runs: list[NewRun], *, replay_of: str = "", idempotency_scope: str = "",
                     check: ResultCheck | None = None, request: TriggerRequest | None = None) -> list[Inserted]:
        """Creates runs of `job` with their first events; idempotency keys return existing runs. `check` sees
        the results before they commit when keys may return runs written earlier (new runs are as asked).
        Raises RepeatedRequest when `request` was made before."""
        with self._tracing.trigger(job.id, len(runs), replay_of=replay_of) as trace, _new_request():
            out = await self._insert(job, runs, replay_of, idempotency_scope, trace, check, request)
        self._metrics.transitions(("", i.run.status.value) for i in out if not i.repeat)
        return out

    async def _insert(self, job: Job, runs: list[NewRun], replay_of: str, idempotency_scope: str,
                      trace: dict[str, str], check: ResultCheck | None,
                      request: TriggerRequest | None) -> list[Inserted]:
        new_ids = ids.new_ids("run", len(runs))
        run_keys = [_key_of(job, r, idempotency_scope) for r in runs]
        # The first run in this call to carry a key stands for every run carrying it.
        keyed = {k: new_ids[i] for i, k in reversed(list(enumerate(run_keys))) if k is not None}
        if not keyed and request is None:
            # New runs only, each as its caller asked: nothing for `check` to see that the caller could not.
            created = await write_runs(self._pool, job.project_id, job.id, "", runs, new_ids, trace,
                                        replay_of=replay_of, checked=True)
            return [Inserted(r, False) for r in _found(created, job)]
        async with self._pool.acquire() as conn, conn.transaction():
            out = await self._insert_keyed(conn, job, runs, new_ids, run_keys, keyed, replay_of, trace)
            if check is not None:
                check(out)
            await _remember(conn, job.project_id, request, out)
        return out

    async def _insert_keyed(self, conn: asyncpg.pool.PoolConnectionProxy, job: Job, runs: list[NewRun],
                            new_ids: list[str], run_keys: list[tuple[str, str] | None],
                            keyed: dict[tuple[str, str], str], replay_of: str,
                            trace: dict[str, str]) -> list[Inserted]:
        """Inside a transaction: claims the keys, then creates the runs no earlier run's key stands for."""
        owner: dict[tuple[str, str], str] = {}
        if keyed:
            keys = sorted(keyed)  # one order for every caller: batches sharing keys cannot deadlock
            won = await conn.fetch(CLAIM_IDEMPOTENCY_KEYS, [k[0] for k in keys], [k[1] for k in keys],
                                   [keyed[k] for k in keys])
            owner = {(r["scope"], r["key"]): r["run_id"] for r in won}
            lost = [k for k in keys if k not in owner]
            if lost:
                existing = await conn.fetch(READ_IDEMPOTENCY_KEYS, [k[0] for k in lost], [k[1] for k in lost])
                owner.update({(r["scope"], r["key"]): r["run_id"] for r in existing})
        # A run is created when it carries no key, or is the first in this call to carry a key we won.
        fresh = [i for i, k in enumerate(run_keys) if k is None or owner[k] == new_ids[i]]
        made = await write_runs(conn, job.project_id, job.id, "", [runs[i] for i in fresh],
                                 [new_ids[i] for i in fresh], trace, replay_of=replay_of, checked=True)
        created = {r.id: r for r in _found(made, job)}
        old_ids = [owner[k] for k in run_keys if k is not None and owner[k] not in created]
        old = {r["id"]: run_from_row(r) for r in
               await conn.fetch(GET_RUNS, old_ids, job.project_id)} if old_ids else {}
        return self._results(run_keys, new_ids, owner, created, old)

    @staticmethod
    def _results(run_keys: list[tuple[str, str] | None], new_ids: list[str], owner: dict[tuple[str, str], str],
                 created: dict[str, Run], old: dict[str, Run]) -> list[Inserted]:
        """One result per requested run: the run it created, or the one its key matched."""
        out = []
        for i, k in enumerate(run_keys):
            run_id = new_ids[i] if k is None else owner[k]
            dedup = k is not None and k[0].startswith("dedup:")
            if run_id in created:
                out.append(Inserted(created[run_id], repeat=run_id != new_ids[i] and not dedup,
                                    deduplicated=run_id != new_ids[i] and dedup))
            else:
                out.append(Inserted(old[run_id], repeat=not dedup, deduplicated=dedup))
        return out

    async def fire_scheduled(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
                             ticks: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Inside the scheduler's transaction: one run per (job id, tick), unless that tick already fired.
        Returns (run id, job id) of the runs created."""
        new_ids = ids.new_ids("run", len(ticks))
        rows = await conn.fetch(FIRE_SCHEDULED, [j for j, _ in ticks], new_ids, [t for _, t in ticks])
        self._metrics.transitions(("", "queued") for _ in rows)
        return [(r["id"], r["job_id"]) for r in rows]

    async def debounce(self, job: Job, runs: list[NewRun], check: ResultCheck | None = None,
                       request: TriggerRequest | None = None) -> list[Inserted]:
        """Triggers of a debounced job: per debounce key, the last trigger's payload goes into the key's
        pending (delayed) run, due a window from now, or into a new one when none is pending. `check` sees the
        results before they commit. Raises RepeatedRequest when `request` was made before."""
        last = {r.debounce_key: r for r in runs}
        window = job.debounce_window_ms
        made: dict[str, Inserted] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_DEBOUNCE_KEYS, job.id, sorted(last))
            fresh: list[tuple[str, NewRun]] = []
            for key, new in last.items():
                row = await conn.fetchrow(JOIN_DEBOUNCED, job.id, key, new.payload, window)
                if row is not None:
                    made[key] = Inserted(run_from_row(row), repeat=False, debounced=True)
                else:
                    due = datetime.now(UTC) + timedelta(milliseconds=window)
                    fresh.append((key, replace(new, scheduled_time=due, idempotency_key="",
                                               metadata={**new.metadata, "triggered_by": "debounce"})))
            if fresh:
                new_ids = ids.new_ids("run", len(fresh))
                created = _found(await write_runs(conn, job.project_id, job.id, "", [n for _, n in fresh], new_ids,
                                                   {}, checked=True), job)
                await conn.execute(SET_DEBOUNCED, job.id, [k for k, _ in fresh], new_ids)
                for (key, _), run in zip(fresh, created, strict=True):
                    made[key] = Inserted(run, repeat=False)
            # Earlier triggers of a key in the same call joined the run the last one made or updated.
            out = [made[r.debounce_key] if r is last[r.debounce_key]
                   else Inserted(made[r.debounce_key].run, repeat=False, debounced=True) for r in runs]
            if check is not None:
                check(out)
            with _new_request():
                await _remember(conn, job.project_id, request, out)
        return out

    async def repeated(self, project_id: str, request_id: str) -> tuple[str, list[Inserted]] | None:
        """What an earlier trigger call with this request id answered: its selector, and its runs as they
        are now; None when the id is unknown (never used, or forgotten after a day)."""
        row = await self._pool.fetchrow(READ_REQUEST, project_id, request_id)
        if row is None:
            return None
        run_ids: list[str] = row["run_ids"]
        found = {r["id"]: run_from_row(r) for r in await self._pool.fetch(GET_RUNS, run_ids, project_id)}
        if len(found) < len(set(run_ids)):
            raise FailedPrecondition(
                f"the runs created by request {request_id!r} were deleted (retention)", subject=request_id)
        outcomes = row["outcomes"] or "n" * len(run_ids)
        return row["selector"], [Inserted(found[i], *_FROM_OUTCOME[o])
                                 for i, o in zip(run_ids, outcomes, strict=True)]

    async def cancel_others(self, job_id: str, keep_run_id: str, reason: str) -> list[str]:
        """Cancels every unfinished run of the job but one (cron overlap policy cancel_running)."""
        rows = await self._pool.fetch(CANCEL_RUNS, None, job_id, None, CANCELABLE, reason, keep_run_id)
        self._metrics.transitions((r["from_status"], "canceled") for r in rows)
        return [r["run_id"] for r in rows]

    async def has_active(self, job_id: str) -> bool:
        return bool(await self._pool.fetchval(HAS_ACTIVE, job_id, [s.value for s in TERMINAL]))

    async def get(self, project_id: str, run_id: str) -> Run:
        row = await self._pool.fetchrow(GET_RUN, run_id, project_id)
        if row is None:
            raise NotFound("run", run_id)
        return run_from_row(row)

    async def list_runs(self, project_id: str, *, job_id: str | None, statuses: list[str] | None,
                        after: datetime | None, before: datetime | None, cursor: tuple[datetime, str] | None,
                        limit: int, max_bytes: int, tags: dict[str, str] | None = None) -> Listed[Run]:
        """Up to `limit` runs, newest first, and fewer once their (estimated) sizes pass `max_bytes`: a page
        of big runs reads little more than what can be sent."""
        t, i = cursor if cursor else (None, None)
        rows = await self._pool.fetch(LIST_RUNS, project_id, job_id, statuses, after, before, t, i, limit,
                                      max_bytes, tags or None)
        return _listed(rows, run_from_row)

    async def cancel(self, project_id: str, run_id: str, reason: str) -> Run:
        rows = await self._pool.fetch(CANCEL_RUNS, [run_id], None, project_id, CANCELABLE, reason, None)
        self._metrics.transitions((r["from_status"], "canceled") for r in rows)
        run = await self.get(project_id, run_id)
        if not rows:
            raise FailedPrecondition(
                f"run {run_id!r} is {run.status.value} and can no longer be canceled", subject=run_id)
        return run

    async def replay(self, project_id: str, job: Job, run_id: str, idempotency_key: str) -> Inserted:
        original = await self.get(project_id, run_id)
        if original.status not in TERMINAL:
            raise FailedPrecondition(
                f"run {run_id!r} is {original.status.value}; only finished runs can be replayed",
                subject=run_id)
        new = NewRun(payload=original.payload, priority=original.priority, timeout_ms=original.timeout_ms,
                     max_attempts=original.max_attempts, idempotency_key=idempotency_key,
                     tags=original.tags, metadata=original.metadata, concurrency_key=original.concurrency_key)
        [inserted] = await self.insert(job, [new], replay_of=original.id,
                                       idempotency_scope=f"replay:{original.id}")
        return inserted

    async def events_after(self, project_id: str, run_id: str, after_seq: int, limit: int) -> list[RunEvent]:
        """Events with a sequence above `after_seq`, in order (no existence check)."""
        rows = await self._pool.fetch(LIST_EVENTS, run_id, project_id, after_seq, limit)
        return [_event(r) for r in rows]

    async def replay_of(self, project_id: str, run_id: str) -> str | None:
        """The first replay of a run, if one was created."""
        value = await self._pool.fetchval(REPLAY_OF, run_id, project_id)
        return None if value is None else str(value)

    async def progress(self, project_id: str, run_id: str) -> tuple[RunStatus, int]:
        """The run's status and the sequence of its latest event."""
        row = await self._pool.fetchrow(RUN_PROGRESS, run_id, project_id)
        if row is None:
            raise NotFound("run", run_id)
        return RunStatus(row["status"]), int(row["event_seq"])

    async def event_page(self, project_id: str, run_id: str, after_seq: int, limit: int,
                         max_bytes: int) -> Listed[RunEvent]:
        """Like `events_after`, and fewer once their (estimated) sizes pass `max_bytes` (as in `list_runs`);
        NOT_FOUND for a run that is not there."""
        rows = await self._pool.fetch(LIST_EVENTS_PAGE, run_id, project_id, after_seq, limit, max_bytes)
        if not rows:
            await self.get(project_id, run_id)  # NOT_FOUND for a run that is not there
        return _listed(rows, _event)


# The store's conditional updates name their "from" statuses from the transition table.
assert set(CANCELABLE) == set(sources_of(RunStatus.CANCELED))
