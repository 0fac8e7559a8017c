"""The dispatch hot path: claim due runs, settle outcomes, recover lost runs, promote delayed ones.

Every statement here is a conditional UPDATE that appends the matching run_events rows in the same
statement, and bumps the run's event_seq under the row lock (see docs/architecture.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from strait_server.dispatch.backoff import retry_delay_sql
from strait_server.model import EventType, RunStatus, sources_of
from strait_server.store.fragments import enqueue, gate_of, insert_events, literal, status_changes
from strait_server.telemetry.metrics import Metrics

_CLAIM_FROM_DUE = f"""
, taken AS (
    -- `= ANY(ARRAY(...))` rather than a join, here and below: queue and lease tables change size faster than
    -- their statistics, and a join planned on stale ones rescanned one side per row of the other
    -- (quadratic: 0.4 s per settle of 200 in the bench). Probing the key with an array cannot go that way.
    DELETE FROM run_queue q WHERE q.run_id = ANY(ARRAY(SELECT run_id FROM due)) RETURNING q.run_id
), claimed AS (
    UPDATE runs r
    SET status = 'executing', attempt = r.attempt + 1, start_time = now(), update_time = now(),
        lease_owner = $2, deadline = now() + r.timeout_ms * interval '1 millisecond',
        event_seq = r.event_seq + 1, wait_reason = '',
        -- A TTL that bounds only the wait for a first start (a workflow step's schedule_to_start_timeout) ends.
        expires_at = CASE WHEN r.ttl_until_start THEN NULL ELSE r.expires_at END
    WHERE r.id = ANY(ARRAY(SELECT run_id FROM taken)) AND r.status = 'queued'
    RETURNING r.id, r.project_id, r.job_id, r.attempt, r.max_attempts, r.timeout_ms, r.payload,
        r.event_seq, r.metadata, r.error, r.priority, r.run_at, r.deadline, r.checkpoint, r.concurrency_key,
        r.attempt_history, r.retry_strategy, r.retry_initial_ms, r.retry_max_ms, r.lost_count
), leased AS (
    INSERT INTO run_leases (run_id, owner, deadline, job_id, concurrency_key)
    SELECT id, $2, deadline, job_id, concurrency_key FROM claimed
), ev AS (
    {status_changes("claimed", RunStatus.QUEUED, RunStatus.EXECUTING)}
)
SELECT c.id, c.project_id, c.job_id, c.attempt, c.max_attempts, c.timeout_ms, c.payload, c.metadata, c.error,
    c.checkpoint, c.lost_count, j.endpoint_url, j.fallback_endpoint_url, j.signing_secret,
    -- A workflow step's retry policy on its run, else the job's: the delay the settle schedules.
    coalesce(c.retry_strategy, j.retry_strategy) AS retry_strategy,
    coalesce(c.retry_initial_ms, j.retry_initial_ms) AS retry_initial_ms,
    coalesce(c.retry_max_ms, j.retry_max_ms) AS retry_max_ms, j.poison_pill_threshold,
    -- What the previous attempts failed with, oldest first: only poison-pill detection needs it.
    CASE WHEN j.poison_pill_threshold > 0 THEN
        (SELECT array_agg(coalesce(x.e->>'status_code', '') || ' ' || coalesce(x.e->>'error', '') ORDER BY x.n)
         FROM jsonb_array_elements(c.attempt_history) WITH ORDINALITY AS x(e, n))
    END AS previous_failures
FROM claimed c JOIN jobs j ON j.id = c.job_id
ORDER BY c.priority DESC, c.run_at, c.id
"""

CLAIM = """
WITH due AS (
    -- Served by run_queue_claim_idx; SKIP LOCKED lets any number of dispatchers claim side by side.
    -- Flow-controlled runs (gate set) are claimed by CLAIM_IDS instead, under their job's lock.
    SELECT q.run_id FROM run_queue q JOIN runs r ON r.id = q.run_id
    WHERE q.gate IS NULL AND q.run_at <= now()
      -- Runs of disabled (or deleted) jobs wait in the queue until the job is enabled again. A scalar
      -- subquery, not EXISTS: as a semi-join the planner sorts every queued row instead of walking the index.
      AND (SELECT j.enabled AND j.delete_time IS NULL FROM jobs j WHERE j.id = q.job_id)
      -- Past its TTL: left for the expiry sweep, never started.
      AND NOT coalesce(r.expires_at <= now(), false)
    ORDER BY q.priority DESC, q.run_at, q.run_id
    LIMIT $1
    -- The run's row too, and skipping both: a cancel or expiry holds the run's row and then deletes its
    -- queue row, so waiting for the run here while holding the queue row could deadlock with it.
    FOR UPDATE OF q, r SKIP LOCKED
)""" + _CLAIM_FROM_DUE
"""$1 batch size, $2 owner (dispatcher id). Takes due runs off the ready queue, flips them to executing."""

CLAIM_IDS = """
WITH due AS (
    SELECT q.run_id FROM run_queue q WHERE q.run_id = ANY($3::text[]) LIMIT $1
)""" + _CLAIM_FROM_DUE
"""$1 count, $2 owner, $3 run ids already locked by this transaction (GATE_HEADS)."""

CLAIM_CREATED = """
WITH due AS (
    SELECT q.run_id FROM run_queue q
    WHERE q.run_id = ANY($3::text[]) AND q.gate IS NULL AND q.run_at <= now()
      -- Only when nothing else claimable is waiting: new runs must not overtake older queued ones.
      AND NOT EXISTS (SELECT 1 FROM run_queue o WHERE o.gate IS NULL AND o.run_at <= now() AND o.run_id <> ALL($3)
                      AND (SELECT j.enabled AND j.delete_time IS NULL FROM jobs j WHERE j.id = o.job_id))
    ORDER BY q.run_id
    LIMIT $1
)""" + _CLAIM_FROM_DUE
"""$1 at most this many, $2 owner, $3 runs the calling transaction created. Claims them for a dispatcher in the
same process as the transaction commits (see workflows/passes.take_progress): no wake-up, no claim round trip."""


ADOPT = """
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::int[], $4::text[], $5::int[]) AS v(id, attempt, owner, lost_count)
), adopted AS (
    -- Still that very dispatch (the owner that made it, its attempt, as many losses: any later dispatch
    -- changes one of them), executing: the lease moves to $3 (from a dead process not yet recovered, or a
    -- live one that has not given it back yet: the row lock decides who is first).
    UPDATE runs r SET lease_owner = $3, update_time = now()
    FROM v WHERE r.id = ANY($1::text[]) AND r.id = v.id AND r.attempt = v.attempt AND r.lease_owner = v.owner
      AND r.lost_count = v.lost_count AND r.status = 'executing'
    RETURNING r.id, r.project_id, r.job_id, r.attempt, r.max_attempts, r.timeout_ms, r.payload, r.metadata,
        r.error, r.checkpoint, r.retry_strategy, r.retry_initial_ms, r.retry_max_ms, r.start_time, r.lost_count
), moved AS (
    UPDATE run_leases l SET owner = $3 WHERE l.run_id = ANY(ARRAY(SELECT id FROM adopted))
)
SELECT a.id, a.project_id, a.job_id, a.attempt, a.max_attempts, a.timeout_ms, a.payload, a.metadata, a.error,
    a.checkpoint, a.lost_count, j.endpoint_url, j.fallback_endpoint_url, j.signing_secret,
    coalesce(a.retry_strategy, j.retry_strategy) AS retry_strategy,
    coalesce(a.retry_initial_ms, j.retry_initial_ms) AS retry_initial_ms,
    coalesce(a.retry_max_ms, j.retry_max_ms) AS retry_max_ms, j.poison_pill_threshold,
    extract(epoch FROM now() - a.start_time)::float8 AS elapsed_s
FROM adopted a JOIN jobs j ON j.id = a.job_id
"""
"""$1 runs, $2 their attempts, $3 the worker plane taking them, $4 the owners and $5 the loss counts of their
dispatches: a reconnecting worker's assignments."""

HELD_STATE = """
SELECT v.id, coalesce(r.status = 'executing' AND r.lease_owner = $2, false) AS mine,
    extract(epoch FROM r.deadline - now())::float8 AS left_s
FROM unnest($1::text[]) AS v(id) LEFT JOIN runs r ON r.id = v.id
"""
"""$1 runs, $2 owner: whether each is still executing under its lease, and the seconds left to its deadline."""

CLAIM_ROUTES = """
WITH per_route AS (
    -- One walk of run_queue_gate_idx per route, in claim order (the routes' gates are 'w/<queue>/<job id>',
    -- see strait_gate): `gate = ANY(...)` over all of them at once was planned as a scan and a sort of
    -- every queued run (0.4 s per claim of 1,000 from 100,000).
    SELECT d.run_id, d.priority, d.run_at FROM unnest($3::text[], $4::int[]) AS g(gate, n) CROSS JOIN LATERAL (
        SELECT q.run_id, q.priority, q.run_at FROM run_queue q JOIN runs r ON r.id = q.run_id
        WHERE q.gate = g.gate AND q.run_at <= now()
          AND (SELECT j.enabled AND j.delete_time IS NULL FROM jobs j WHERE j.id = q.job_id)
          AND NOT coalesce(r.expires_at <= now(), false)
        ORDER BY q.priority DESC, q.run_at, q.run_id
        LIMIT least($1, g.n)  -- no more than the route's workers can take
        FOR UPDATE OF q, r SKIP LOCKED
    ) d
), due AS (
    SELECT run_id FROM per_route ORDER BY priority DESC, run_at, run_id LIMIT $1
)""" + _CLAIM_FROM_DUE
"""$1 batch size, $2 owner (the worker plane of this process), $3 route gates, $4 how many runs each route's
workers can take. Takes due runs of worker jobs off
the ready queue for the workers connected here."""

# -- Flow control (see strait_server/dispatch/gates.py). -------------------------------------------------

GATES_WAITING = """
WITH RECURSIVE g AS (
    -- A loose index scan over run_queue_gate_idx: one probe per distinct gate, however deep its backlog,
    -- starting after $1 and stopping after $2 gates (the recursion is evaluated only as far as needed).
    -- Gates of HTTP jobs only ('<job id>...', before 'w/'): the worker plane's ('w/...') may be many (one per
    -- concurrency key) and are claimed by the worker plane (ROUTE_GATES_WAITING).
    (SELECT gate FROM run_queue WHERE gate > $1 AND gate < 'w/' ORDER BY gate LIMIT 1)
    UNION ALL
    SELECT (SELECT q.gate FROM run_queue q WHERE q.gate > g.gate AND q.gate < 'w/' ORDER BY q.gate LIMIT 1)
    FROM g WHERE g.gate IS NOT NULL
)
SELECT g.gate, j.id AS job_id, j.max_concurrency, j.max_concurrency_per_key, j.rate_limit_max,
    j.rate_limit_window_ms, j.execution_window_cron, j.timezone,
    coalesce(j.enabled AND j.delete_time IS NULL, false) AS usable
FROM (SELECT gate FROM g WHERE gate IS NOT NULL LIMIT $2) g
LEFT JOIN jobs j ON j.id = split_part(g.gate, '/', 1)
ORDER BY g.gate
"""
"""$1 the gate to start after ('' from the first), $2 how many gates: gates with runs in the ready queue (due
or not), in gate order, and their job's limits. Gates of disabled or deleted jobs come back too (usable
false), so that the round-robin cursor moves past them."""

ROUTE_GATES_WAITING = """
WITH RECURSIVE g AS (
    -- A loose index scan per route over run_queue_gate_idx, as in GATES_WAITING: the limited gates of route
    -- 'w/<queue>/<job id>' are 'w/<queue>/<job id>/<key>' (see strait_gate), a range of the index in its
    -- byte order. Each route starts after its cursor and stops after its count of gates.
    SELECT p.route, p.n, 1 AS i,
        (SELECT q.gate FROM run_queue q WHERE q.gate >= p.route || '/' AND q.gate > p.after
             AND q.gate < p.route || '0' ORDER BY q.gate LIMIT 1) AS gate
    FROM unnest($1::text[], $2::text[], $3::int[]) AS p(route, after, n)
    UNION ALL
    SELECT g.route, g.n, g.i + 1,
        (SELECT q.gate FROM run_queue q WHERE q.gate > g.gate AND q.gate < g.route || '0' ORDER BY q.gate LIMIT 1)
    FROM g WHERE g.gate IS NOT NULL AND g.i < g.n
)
SELECT g.route, g.gate, j.id AS job_id, j.max_concurrency, j.max_concurrency_per_key, j.rate_limit_max,
    j.rate_limit_window_ms, j.execution_window_cron, j.timezone,
    coalesce(j.enabled AND j.delete_time IS NULL, false) AS usable
FROM g LEFT JOIN jobs j ON j.id = split_part(g.gate, '/', 3)
WHERE g.gate IS NOT NULL
ORDER BY g.route, g.gate
"""
"""$1 routes ('w/<queue>/<job id>'), $2 the gate to start after in each ('' from the first), $3 how many gates
in each: the limited gates of the routes with runs in the ready queue, with their job's limits (as
GATES_WAITING)."""

LOCK_JOBS = """
SELECT count(pg_advisory_xact_lock(hashtextextended('strait-gate:' || k, 0))), now()
FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) s
"""
"""$1 job ids. Serialises gated claims per job (in a fixed order, so claimers never deadlock); the next
statement's snapshot then sees every lease a previous holder committed. Returns the transaction's now()."""

GATE_STATE = """
SELECT 'job' AS kind, job_id, '' AS concurrency_key, count(*)::int AS n, NULL::timestamptz AS since
FROM run_leases WHERE job_id = ANY($1::text[]) GROUP BY job_id
UNION ALL
SELECT 'key', l.job_id, l.concurrency_key, count(*)::int, NULL
FROM run_leases l JOIN unnest($2::text[], $3::text[]) AS v(job_id, k) ON l.job_id = v.job_id AND l.concurrency_key = v.k
GROUP BY l.job_id, l.concurrency_key
UNION ALL
SELECT 'rate', job_id, '', started, window_start FROM job_rate_windows WHERE job_id = ANY($1::text[])
"""
"""$1 job ids, $2/$3 (job id, key) pairs: executing runs per job and per key, and each job's rate window."""

GATE_HEADS = """
SELECT g.gate, h.run_id, h.priority, h.run_at
FROM unnest($1::text[], $2::int[]) AS g(gate, n)
CROSS JOIN LATERAL (
    SELECT q.run_id, q.priority, q.run_at FROM run_queue q JOIN runs e ON e.id = q.run_id
    WHERE q.gate = g.gate AND q.run_at <= now() AND NOT coalesce(e.expires_at <= now(), false)
    ORDER BY q.priority DESC, q.run_at, q.run_id
    LIMIT g.n
    -- Both rows, as in CLAIM: CLAIM_IDS then updates runs this transaction already holds.
    FOR UPDATE OF q, e SKIP LOCKED
) h
"""
"""$1 gates, $2 how many runs each may start: the best due runs of each gate, locked."""

SAVE_RATE_WINDOWS = """
INSERT INTO job_rate_windows (job_id, window_start, started)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[])
ON CONFLICT (job_id) DO UPDATE SET window_start = EXCLUDED.window_start, started = EXCLUDED.started
"""

MARK_WAITING = f"""
WITH top AS (
    SELECT q.run_id, g.reason FROM unnest($1::text[], $2::text[]) AS g(gate, reason)
    CROSS JOIN LATERAL (
        -- The runs next in line say why they wait; the rest of a deep backlog is not rewritten each claim.
        SELECT q.run_id FROM run_queue q WHERE q.gate = g.gate AND q.run_at <= now()
        ORDER BY q.priority DESC, q.run_at, q.run_id LIMIT 20
    ) q
), upd AS (
    UPDATE runs r SET wait_reason = top.reason, update_time = now(), event_seq = r.event_seq + 1
    FROM top WHERE r.id = ANY(ARRAY(SELECT run_id FROM top)) AND r.id = top.run_id AND r.status = 'queued'
      AND r.wait_reason <> top.reason
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.wait_reason
)
{insert_events("upd", EventType.WAITING, message="wait_reason", returning="run_id")}
"""
"""$1 gates, $2 reasons. Records (once per change) why the first runs of a held gate are not starting."""

DEFER_TO_WINDOW = f"""
WITH due AS (
    -- Both rows locked first, skipping held ones, as in CLAIM: a cancel or expiry holds the run's row and then
    -- deletes its queue row, so taking the queue row first could deadlock with it.
    SELECT q.run_id FROM run_queue q JOIN runs r ON r.id = q.run_id
    WHERE q.gate = ANY($1::text[]) AND q.run_at <= now() AND r.status = 'queued'
    FOR UPDATE OF q, r SKIP LOCKED
), moved AS (
    DELETE FROM run_queue q WHERE q.run_id = ANY(ARRAY(SELECT run_id FROM due)) RETURNING q.run_id
), upd AS (
    UPDATE runs r SET status = 'delayed', run_at = $2, scheduled_time = $2, wait_reason = $3, update_time = now(),
        event_seq = r.event_seq + 1
    WHERE r.id = ANY(ARRAY(SELECT run_id FROM moved)) AND r.status = 'queued'
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt
)
{status_changes("upd", RunStatus.QUEUED, RunStatus.DELAYED, message="$3", returning="run_id")}
"""
"""$1 the gates of one job, $2 when its execution window opens, $3 reason. Due runs wait, delayed, until then."""

SETTLE = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::jsonb[])
        AS v(id, attempt, to_status, output, error, error_class, delay_ms, rec)
), mine AS (
    -- Fencing: only the owner of this very attempt may settle it; a canceled or recovered run is left alone.
    -- Checked run by run through the primary key (LATERAL), so no statistics can change the plan: joined
    -- as a whole, a stale estimate of how many runs are executing (none, when last analysed) was planned
    -- as a scan of every executing run per outcome, quadratic (0.4-0.8 s per settle of 200 in the bench).
    SELECT v.* FROM v CROSS JOIN LATERAL (
        SELECT FROM runs r WHERE r.id = v.id AND r.status = 'executing' AND r.attempt = v.attempt
            AND r.lease_owner = $9
        FOR UPDATE) fenced
), upd AS (
    UPDATE runs r
    SET status = v.to_status,
        output = coalesce(v.output, r.output),
        error = v.error, error_class = v.error_class,
        -- Not attempted (its endpoint's circuit is open): the attempt is given back, nothing is recorded, and
        -- the run says what it waits for, like a run held by a flow-control limit.
        attempt = r.attempt - (v.error_class = 'circuit_open')::int,
        wait_reason = CASE WHEN v.error_class = 'circuit_open' THEN v.error ELSE '' END,
        finish_time = CASE WHEN v.to_status = 'queued' THEN NULL ELSE now() END,
        run_at = CASE WHEN v.to_status = 'queued' THEN now() + v.delay_ms * interval '1 millisecond'
                      ELSE r.run_at END,
        lease_owner = NULL, deadline = NULL, update_time = now(),
        attempt_history = CASE WHEN v.error_class = 'circuit_open' THEN r.attempt_history
                               ELSE r.attempt_history || jsonb_build_array(v.rec) END,
        event_seq = r.event_seq + 1
    FROM mine v
    WHERE r.id = ANY($1::text[]) AND r.id = v.id  -- `= ANY`: the runs side is as small as v, by the key
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.priority, r.run_at, v.to_status, v.error
), released AS (
    DELETE FROM run_leases l WHERE l.run_id = ANY(ARRAY(SELECT id FROM upd))
), requeued AS (
    {enqueue("upd", "strait_run_gate(id)", where=f"to_status = {literal(RunStatus.QUEUED)}")}
), ended AS (
    -- The attempt ended another way first (Complete/Fail from the run's code, CancelRun): its outcome is
    -- dropped, but what the endpoint answered still belongs in the attempt history. By key, as in `mine`.
    SELECT v.* FROM v CROSS JOIN LATERAL (
        SELECT FROM runs r WHERE r.id = v.id AND r.status <> 'executing' AND r.attempt = v.attempt
            AND NOT r.attempt_history @> jsonb_build_array(jsonb_build_object('attempt', v.attempt))
        FOR UPDATE) late
    WHERE v.error_class <> 'circuit_open'
), late AS (
    UPDATE runs r SET attempt_history = r.attempt_history || jsonb_build_array(v.rec)
    FROM ended v WHERE r.id = ANY($1::text[]) AND r.id = v.id
)
{status_changes("upd", RunStatus.EXECUTING, "to_status", message="error", returning="run_id")}
"""
"""$1..$8 per-outcome arrays, $9 owner. Returns the ids actually settled (late outcomes only add their
attempt record)."""

SUSPECT_DISPATCHERS = """
UPDATE dispatchers SET suspected_at = now()
WHERE suspected_at IS NULL AND heartbeat_time < now() - $1::interval
"""
"""$1 owner staleness. The first step of declaring a dispatcher dead: its heartbeat is stale now. After a database
outage every heartbeat is stale at once, so a live dispatcher is only suspected here, and clears the mark with
its next heartbeat; RECOVER takes the runs of dispatchers that stayed suspected for another staleness period."""

def _requeue_lost(lost: str, cause: str) -> str:
    """The runs of the CTE `lost` (run_id, detached; their leases and rows locked) lost by `cause` ("dispatcher",
    "worker"): their leases released, and each run requeued at once without spending the attempt, up to $3
    losses (after that the loss counts as an attempt), or timed out when the lease was detached."""
    return f"""
WITH lost AS (
    {lost}
), released AS (
    DELETE FROM run_leases l WHERE l.run_id = ANY(ARRAY(SELECT run_id FROM lost)) RETURNING l.run_id, l.detached
), judged AS (
    -- Lost through no fault of its own (its dispatcher died, or its outcome was lost with the database): run
    -- again at once without spending the attempt, up to $3 times; after that the loss counts as an attempt, so
    -- a run that kills every process it runs on ends instead of looping.
    SELECT r.id, released.detached, NOT released.detached AND r.lost_count < $3 AS free,
        r.attempt < r.max_attempts AS attempts_left
    FROM released JOIN runs r ON r.id = released.run_id
), upd AS (
    UPDATE runs r
    SET status = CASE WHEN g.free OR g.attempts_left THEN 'queued'
                      WHEN g.detached THEN 'timed_out' ELSE 'crashed' END,
        error = CASE WHEN g.detached THEN 'no completion reported within the timeout'
                     WHEN g.free THEN '{cause} lost; requeued without spending an attempt'
                     WHEN g.attempts_left THEN '{cause} lost; retry scheduled'
                     ELSE '{cause} lost' END,
        error_class = CASE WHEN g.detached THEN 'timeout' ELSE 'crashed' END,
        attempt = r.attempt - g.free::int,
        lost_count = r.lost_count + g.free::int,
        start_time = CASE WHEN g.free THEN NULL ELSE r.start_time END,
        run_at = now() + CASE WHEN g.free THEN 0
                              ELSE {retry_delay_sql("coalesce(r.retry_strategy, j.retry_strategy)",
                                                    "coalesce(r.retry_initial_ms, j.retry_initial_ms)",
                                                    "coalesce(r.retry_max_ms, j.retry_max_ms)", "r.attempt")}
                         END * interval '1 millisecond',
        finish_time = CASE WHEN g.free OR g.attempts_left THEN NULL ELSE now() END,
        lease_owner = NULL, deadline = NULL, update_time = now(), event_seq = r.event_seq + 1
    FROM judged g, jobs j
    WHERE r.id = ANY(ARRAY(SELECT id FROM judged)) AND r.id = g.id AND j.id = r.job_id
      AND r.status = 'executing'
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.status, r.error, r.priority, r.run_at,
        {gate_of("j", "r.concurrency_key")} AS gate
), requeued AS (
    {enqueue("upd", "gate", where=f"status = {literal(RunStatus.QUEUED)}")}
)
{status_changes("upd", RunStatus.EXECUTING, "status", message="error", returning="run_id, to_status")}
"""


RECOVER = _requeue_lost("""SELECT l.run_id, l.detached FROM run_leases l
    -- A detached lease (the endpoint answered 202) outlives its dispatcher; only its deadline ends it.
    JOIN runs r ON r.id = l.run_id
    WHERE (NOT l.detached AND NOT EXISTS (SELECT 1 FROM dispatchers d
                                          WHERE d.id = l.owner
                                            AND coalesce(d.suspected_at > now() - $1::interval, true)))
       OR l.deadline < now() - CASE WHEN l.detached THEN interval '0' ELSE $2::interval END
    LIMIT 1000
    -- The run's row too, and skipping both: a settle, Complete or heartbeat holds the run's row and then
    -- touches its lease, so waiting for the run while holding the lease could deadlock with it.
    FOR UPDATE OF l, r SKIP LOCKED""", "dispatcher")
"""$1 owner staleness, $2 deadline grace, $3 how many losses a run is given back. Requeues (or crashes) runs
whose dispatcher died or stayed silent past their deadline."""

LOSE = _requeue_lost("""SELECT l.run_id, l.detached FROM run_leases l JOIN runs r ON r.id = l.run_id
    WHERE l.run_id = ANY($1::text[]) AND l.owner = $2
    ORDER BY l.run_id
    FOR UPDATE OF l, r""", "worker")
"""$1 runs, $2 the owner holding them, $3 how many losses a run is given back: the runs of a worker whose stream
ended, requeued at once (see _requeue_lost)."""

DETACH = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::jsonb[]) AS v(id, attempt, rec)
), upd AS (
    UPDATE runs r SET attempt_history = r.attempt_history || jsonb_build_array(v.rec), update_time = now(),
        event_seq = r.event_seq + 1
    FROM v WHERE r.id = ANY($1::text[]) AND r.id = v.id AND r.status = 'executing' AND r.attempt = v.attempt
      AND r.lease_owner = $4  -- `= ANY`: see CLAIM
      -- Written once: a dispatcher re-writes its outcomes after a database restart that may have lost them.
      AND NOT r.attempt_history @> jsonb_build_array(jsonb_build_object('attempt', v.attempt))
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt
), detached AS (
    UPDATE run_leases l SET detached = true WHERE l.run_id = ANY(ARRAY(SELECT id FROM upd))
)
{insert_events("upd", EventType.ACCEPTED, returning="run_id",
                message="'endpoint answered 202 Accepted; waiting for Complete or Fail'")}
"""
"""$1 ids, $2 attempts, $3 attempt records, $4 owner. The endpoint took the run asynchronously: the run stays
executing under a detached lease until its code reports Complete/Fail or the deadline passes."""

HAND_BACK = f"""
WITH released AS (
    -- Detached leases (202 Accepted) stay: the run's code completes them, not this process.
    DELETE FROM run_leases l WHERE l.owner = $1 AND NOT l.detached RETURNING l.run_id
), upd AS (
    UPDATE runs r
    SET status = 'queued', attempt = r.attempt - 1, run_at = now(), start_time = NULL,
        lease_owner = NULL, deadline = NULL, update_time = now(), event_seq = r.event_seq + 1
    WHERE r.id = ANY(ARRAY(SELECT run_id FROM released)) AND r.status = 'executing' AND r.lease_owner = $1
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.priority, r.run_at
), requeued AS (
    {enqueue("upd", "strait_run_gate(id)")}
)
{status_changes("upd", RunStatus.EXECUTING, RunStatus.QUEUED, message="'handed back at shutdown'",
                returning="run_id")}
"""
"""$1 owner. At shutdown: unfinished runs go back to the queue at once, without using an attempt."""

PROMOTE_DELAYED = f"""
WITH due AS (
    SELECT id FROM runs WHERE status = 'delayed' AND run_at <= now()
    ORDER BY run_at LIMIT 1000
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE runs r SET status = 'queued', update_time = now(), event_seq = r.event_seq + 1
    FROM due WHERE r.id = due.id
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.priority, r.run_at
), requeued AS (
    {enqueue("upd", "strait_run_gate(id)")}
)
{status_changes("upd", RunStatus.DELAYED, RunStatus.QUEUED, returning="run_id")}
"""

EXPIRE = f"""
WITH old AS (
    SELECT id, status FROM runs
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'delayed') AND expires_at <= now()
    ORDER BY expires_at LIMIT 1000
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE runs r SET status = 'expired', error = 'run expired while waiting to be dispatched', finish_time = now(),
        update_time = now(), event_seq = r.event_seq + 1
    FROM old WHERE r.id = old.id
    RETURNING r.id, r.project_id, r.job_id, r.event_seq, r.attempt, r.error, old.status AS from_status
), unqueued AS (
    DELETE FROM run_queue q WHERE q.run_id = ANY(ARRAY(SELECT id FROM upd))
)
{status_changes("upd", "from_status", RunStatus.EXPIRED, message="error", returning="run_id, from_status")}
"""
"""Queued or delayed runs past their TTL become expired (and leave the ready queue)."""

# Dead entries of the ready queue slow every claim until removed; the table is small, so this is cheap.
VACUUM_QUEUE = "VACUUM (SKIP_LOCKED, TRUNCATE false) run_queue, run_leases"

NEXT_DELAYED = "SELECT min(run_at) - now() FROM runs WHERE status = 'delayed'"

HEARTBEAT = """
INSERT INTO dispatchers (id, hostname, pid) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET heartbeat_time = now(), suspected_at = NULL
RETURNING pg_postmaster_start_time()
"""
"""Committed durably: every settle committed before it started is on disk once it returns.
Returns when the database server started, which tells the dispatcher that a restart may have lost settles."""

REMOVE_DISPATCHER = "DELETE FROM dispatchers WHERE id = $1"
PRUNE_DISPATCHERS = "DELETE FROM dispatchers WHERE heartbeat_time < now() - interval '1 hour'"

# The conditional updates above must agree with the transition table in model.py.
for _src, _dst in (("queued", "executing"), ("executing", "completed"), ("executing", "queued"), ("queued", "delayed"),
                   ("executing", "dead_letter"), ("executing", "timed_out"), ("executing", "crashed"),
                   ("delayed", "queued")):
    assert _src in sources_of(RunStatus(_dst)), (_src, _dst)


@dataclass(frozen=True, kw_only=True)
class ClaimedRun:
    id: str
    project_id: str
    job_id: str
    attempt: int
    max_attempts: int
    timeout_ms: int
    payload: str
    metadata: dict[str, str]
    previous_error: str
    endpoint_url: str
    fallback_endpoint_url: str
    signing_secret: str
    # The run's retry policy: a workflow step's, else its job's.
    retry_strategy: str
    retry_initial_ms: int
    retry_max_ms: int
    checkpoint: str | None = None
    poison_pill_threshold: int = 0
    # "<status code> <error>" of each earlier attempt, oldest first (only when poison_pill_threshold > 0).
    previous_failures: tuple[str, ...] = ()
    # Free losses before this dispatch (with the lease owner and the attempt, it names the dispatch).
    lost_count: int = 0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    run_id: str
    attempt: int
    to_status: RunStatus
    output: str | None
    error: str
    error_class: str
    delay_ms: int
    record: dict[str, Any]


def claimed_from_row(row: Any) -> ClaimedRun:
    return ClaimedRun(
        id=row["id"], project_id=row["project_id"], job_id=row["job_id"], attempt=row["attempt"],
        max_attempts=row["max_attempts"], timeout_ms=row["timeout_ms"], payload=row["payload"],
        metadata=dict(row["metadata"]), previous_error=row["error"], endpoint_url=row["endpoint_url"],
        fallback_endpoint_url=row["fallback_endpoint_url"], signing_secret=row["signing_secret"],
        retry_strategy=row["retry_strategy"], retry_initial_ms=row["retry_initial_ms"],
        retry_max_ms=row["retry_max_ms"], checkpoint=row.get("checkpoint"),
        poison_pill_threshold=row.get("poison_pill_threshold") or 0,
        previous_failures=tuple(row.get("previous_failures") or ()),
        lost_count=row.get("lost_count") or 0,
    )


async def claim_created(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, owner: str,
                        run_ids: list[str], limit: int) -> list[ClaimedRun]:
    """Inside the caller's transaction: its new, unthrottled runs, claimed by dispatcher `owner`."""
    return [claimed_from_row(r) for r in await conn.fetch(CLAIM_CREATED, limit, owner, run_ids)]


class Queue:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics | None = None, *,
                 claim_pool: asyncpg.Pool | None = None, settle_pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool
        self._claim_pool = claim_pool or pool  # sessions pinned to index plans (see App.start)
        self._settle_pool = settle_pool or pool  # sessions on generic plans (see App.start)
        # Counts the transitions these statements commit (claims are counted by the dispatcher).
        self._metrics = metrics or Metrics()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    async def claim_routes(self, owner: str, routes: dict[str, int], limit: int) -> list[ClaimedRun]:
        """Runs of worker jobs on these route gates (each with how many runs its workers can take), at most
        `limit`, for the worker plane `owner` (on the claim pool: its sessions are pinned to index plans, see
        App.start)."""
        rows = await self._claim_pool.fetch(CLAIM_ROUTES, limit, owner, list(routes), list(routes.values()))
        return [claimed_from_row(r) for r in rows]

    async def adopt(self, owner: str, runs: list[tuple[str, int, str, int]]) -> list[tuple[ClaimedRun, float]]:
        """The runs (id, attempt, owner, lost count of the dispatch) still in that dispatch, executing, their
        leases now `owner`'s; with the seconds each has been running."""
        rows = await self._pool.fetch(ADOPT, [r[0] for r in runs], [r[1] for r in runs], owner,
                                      [r[2] for r in runs], [r[3] for r in runs])
        return [(claimed_from_row(r), float(r["elapsed_s"] or 0.0)) for r in rows]

    async def held_state(self, owner: str, run_ids: list[str]) -> list[tuple[str, bool, float | None]]:
        """(run, still executing under `owner`'s lease, seconds left to its deadline) of these runs."""
        rows = await self._pool.fetch(HELD_STATE, run_ids, owner)
        return [(r["id"], bool(r["mine"]), r["left_s"]) for r in rows]

    async def lose(self, owner: str, run_ids: list[str], max_lost: int) -> list[str]:
        """A worker's stream ended with these runs unreported: requeued at once (see LOSE); returns the runs
        whose status changed."""
        rows = await self._pool.fetch(LOSE, run_ids, owner, max_lost)
        self._metrics.transitions(("executing", r["to_status"]) for r in rows)
        return [r["run_id"] for r in rows]

    async def claim(self, owner: str, limit: int) -> list[ClaimedRun]:
        rows = await self._claim_pool.fetch(CLAIM, limit, owner)
        return [claimed_from_row(r) for r in rows]

    async def settle(self, owner: str, outcomes: list[Outcome]) -> set[str]:
        started = time.perf_counter()
        rows = await self._settle_pool.fetch(
            SETTLE,
            [o.run_id for o in outcomes],
            [o.attempt for o in outcomes],
            [o.to_status.value for o in outcomes],
            [o.output for o in outcomes],
            [o.error for o in outcomes],
            [o.error_class for o in outcomes],
            [o.delay_ms for o in outcomes],
            [o.record for o in outcomes],
            owner,
        )
        self._metrics.settle_duration.observe(time.perf_counter() - started)
        settled = {r["run_id"] for r in rows}
        self._metrics.transitions(("executing", o.to_status.value) for o in outcomes if o.run_id in settled)
        return settled

    async def detach(self, owner: str, outcomes: list[Outcome]) -> set[str]:
        rows = await self._settle_pool.fetch(DETACH, [o.run_id for o in outcomes], [o.attempt for o in outcomes],
                                      [o.record for o in outcomes], owner)
        return {r["run_id"] for r in rows}

    async def recover(self, stale_after: timedelta, deadline_grace: timedelta, max_lost: int) -> list[str]:
        await self._pool.execute(SUSPECT_DISPATCHERS, stale_after)
        rows = await self._pool.fetch(RECOVER, stale_after, deadline_grace, max_lost)
        self._metrics.transitions(("executing", r["to_status"]) for r in rows)
        return [r["run_id"] for r in rows]

    async def hand_back(self, owner: str) -> list[str]:
        rows = await self._pool.fetch(HAND_BACK, owner)
        self._metrics.transition("executing", "queued", len(rows))
        return [r["run_id"] for r in rows]

    async def expire(self) -> list[str]:
        rows = await self._pool.fetch(EXPIRE)
        self._metrics.transitions((r["from_status"], "expired") for r in rows)
        return [r["run_id"] for r in rows]

    async def promote_delayed(self) -> list[str]:
        rows = await self._pool.fetch(PROMOTE_DELAYED)
        self._metrics.transition("delayed", "queued", len(rows))
        return [r["run_id"] for r in rows]

    async def next_delayed_in(self) -> timedelta | None:
        value = await self._pool.fetchval(NEXT_DELAYED)
        return value if isinstance(value, timedelta) else None

    async def heartbeat(self, owner: str, hostname: str, pid: int) -> datetime:
        """Renews the owner's liveness; returns when the database server started (see HEARTBEAT)."""
        # On the dispatch pool, away from API load, but committed durably whatever the pool's setting.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")
            started: datetime = await conn.fetchval(HEARTBEAT, owner, hostname, pid)
        return started

    async def remove_dispatcher(self, owner: str) -> None:
        await self._pool.execute(REMOVE_DISPATCHER, owner)

    async def vacuum_queue(self) -> None:
        await self._pool.execute(VACUUM_QUEUE)

    async def prune_dispatchers(self) -> None:
        await self._pool.execute(PRUNE_DISPATCHERS)
