"""Events sent to workflow runs (EventService.SendEvent): stored for look-backs, and handed to the steps
waiting for their key through workflow_progress, like the end of a step's job run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from strait_server import ids

LOCK_KEY = "SELECT pg_advisory_xact_lock(hashtextextended('strait-event:' || $1 || ':' || $2, 0))"
"""Exclusive against the shared lock of a step starting to wait (store/workflow_runs.LOCK_EVENT_KEY)."""

INSERT_EVENT = """
INSERT INTO events (id, project_id, key, payload, idempotency_key) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
RETURNING id, key, payload, idempotency_key, create_time
"""
"""No row: the idempotency key names an earlier event."""

BY_IDEMPOTENCY_KEY = """
SELECT id, key, payload, idempotency_key, create_time FROM events WHERE project_id = $1 AND idempotency_key = $2
"""

WAITING_FOR = "SELECT step_run_id, match FROM event_waits WHERE project_id = $1 AND event_key = $2"

DELIVER = """
WITH unwaited AS (
    DELETE FROM event_waits WHERE step_run_id = ANY($1::text[]) RETURNING step_run_id
), queued AS (
    INSERT INTO workflow_progress (step_run_id, event_id) SELECT step_run_id, $2 FROM unwaited
)
-- Delivered at commit: wakes the engine, as the end of a step's job run does.
SELECT pg_notify('strait_workflow_progress', '')
"""
"""$1 the waiting step runs the event resolves, $2 the event."""

@dataclass(frozen=True)
class SentEvent:
    id: str
    key: str
    payload: Any
    idempotency_key: str
    create_time: datetime


@dataclass(frozen=True)
class Sent:
    event: SentEvent
    matched_steps: int
    repeat: bool


def _event(row: Any) -> SentEvent:
    return SentEvent(id=row["id"], key=row["key"], payload=row["payload"], idempotency_key=row["idempotency_key"],
                     create_time=row["create_time"])


class SentEventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def send(self, project_id: str, key: str, payload: Any, idempotency_key: str,
                   matches: Callable[[str, Any], bool]) -> Sent:
        """Stores the event and hands it to every step of the project waiting for `key` whose match accepts
        the payload (`matches(match, payload)`), in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_KEY, project_id, key)
            row = await conn.fetchrow(INSERT_EVENT, ids.new_id("evt"), project_id, key, payload, idempotency_key)
            if row is None:
                earlier = await conn.fetchrow(BY_IDEMPOTENCY_KEY, project_id, idempotency_key)
                return Sent(_event(earlier), 0, True)
            event = _event(row)
            waits = await conn.fetch(WAITING_FOR, project_id, key)
            matched = [w["step_run_id"] for w in waits if not w["match"] or matches(w["match"], event.payload)]
            if matched:
                await conn.execute(DELIVER, matched, event.id)
            return Sent(event, len(matched), False)
