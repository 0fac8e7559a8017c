"""Retention: deleting finished runs, with their events and idempotency keys, once they are old enough, and
forgetting trigger request ids after a day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from strait_server.model import TERMINAL, RunStatus

# Finished runs that retention deletes: every terminal status except dead_letter (those runs wait for a
# replay and are kept). DELETE_EXPIRED spells the list out as literals, in this order, so that the planner
# matches it to the partial index runs_retention_idx (migrations/0006_retention.sql), which has the same list.
RETAINED_STATUSES = ("completed", "failed", "timed_out", "crashed", "system_failed", "canceled", "expired")
assert {RunStatus(s) for s in RETAINED_STATUSES} == TERMINAL - {RunStatus.DEAD_LETTER}

DELETE_EXPIRED = f"""
WITH doomed AS (
    SELECT id FROM runs
    WHERE status IN ({", ".join(f"'{s}'" for s in RETAINED_STATUSES)})
      AND finish_time < now() - $1::interval
    ORDER BY finish_time
    LIMIT $2
    -- A run another transaction holds is left for a later batch: retention never waits on a lock.
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM run_events e USING doomed d WHERE e.run_id = d.id RETURNING 1
), keys AS (
    -- A key left behind would point a repeated trigger at a run that no longer exists.
    DELETE FROM idempotency_keys k USING doomed d WHERE k.run_id = d.id
), debounced AS (
    DELETE FROM debounce_runs b USING doomed d WHERE b.run_id = d.id
), gone AS (
    -- run_queue and run_leases hold only queued and executing runs, never finished ones.
    DELETE FROM runs r USING doomed d WHERE r.id = d.id RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS runs, (SELECT count(*) FROM events) AS events
"""
"""$1 retention (finished longer ago than this), $2 batch size. One short transaction per batch."""

# Trigger request ids are remembered this long (the proto's TriggerJobRequest.request_id says so).
REQUEST_MEMORY = timedelta(hours=24)

FORGET_REQUESTS = """
DELETE FROM trigger_requests
WHERE (project_id, request_id) IN (SELECT project_id, request_id FROM trigger_requests
                                   WHERE create_time < now() - $1::interval LIMIT $2)
"""
"""$1 how long request ids are remembered, $2 batch size."""

# Sent events are kept as long as a wait_for_event step may look back for one (the proto's lookback says so).
EVENT_MEMORY = timedelta(hours=24)

FORGET_EVENTS = """
DELETE FROM events WHERE id IN (SELECT id FROM events WHERE create_time < now() - $1::interval LIMIT $2)
"""
"""$1 how long events are kept, $2 batch size."""

# A batch normally takes milliseconds; this only bounds one stuck behind something unexpected.
_TIMEOUT = 60.0


@dataclass(frozen=True)
class Deleted:
    runs: int
    events: int


class RetentionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def delete_batch(self, older_than: timedelta, limit: int) -> Deleted:
        row = await self._pool.fetchrow(DELETE_EXPIRED, older_than, limit, timeout=_TIMEOUT)
        assert row is not None
        return Deleted(runs=int(row["runs"]), events=int(row["events"]))

    async def forget_requests(self, limit: int) -> int:
        """Forgets up to `limit` trigger request ids older than REQUEST_MEMORY; returns how many."""
        status = await self._pool.execute(FORGET_REQUESTS, REQUEST_MEMORY, limit, timeout=_TIMEOUT)
        return int(status.split()[-1])

    async def forget_events(self, limit: int) -> int:
        """Forgets up to `limit` sent events older than EVENT_MEMORY; returns how many."""
        status = await self._pool.execute(FORGET_EVENTS, EVENT_MEMORY, limit, timeout=_TIMEOUT)
        return int(status.split()[-1])
