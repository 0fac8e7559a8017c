"""SQL of worker sessions (the listing of connected workers, and remote drains)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from strait_server.errors import NotFound

COLUMNS = """id, project_id, worker_id, name, hostname, server_id, handlers, slots, in_flight, drain_requested,
create_time, seen_time"""

INSERT = """
INSERT INTO worker_sessions (id, project_id, worker_id, name, hostname, server_id, handlers, slots)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
"""

DELETE = "DELETE FROM worker_sessions WHERE id = $1"

REFRESH = """
UPDATE worker_sessions w SET slots = v.slots, in_flight = v.in_flight, seen_time = now()
FROM unnest($1::text[], $2::int[], $3::int[]) AS v(id, slots, in_flight)
WHERE w.id = v.id
RETURNING w.id, w.drain_requested
"""
"""A hub's heartbeat: the counts of its sessions; returns which of them were asked to drain."""

FORGET_GONE_SERVERS = """
DELETE FROM worker_sessions w WHERE NOT EXISTS (SELECT 1 FROM dispatchers d WHERE d.id = w.server_id)
"""
"""Sessions of server processes that are gone (their dispatcher rows removed at shutdown, or pruned an hour
after their last heartbeat; until then the listing hides them as soon as their process is suspected dead)."""

# A session is shown while its server process is alive (its dispatcher row not suspected of being dead).
_ALIVE = """EXISTS (SELECT 1 FROM dispatchers d WHERE d.id = worker_sessions.server_id AND d.suspected_at IS NULL)"""

LIST = f"""
SELECT {COLUMNS} FROM worker_sessions
WHERE project_id = $1 AND ($2::timestamptz IS NULL OR (create_time, id) > ($2, $3)) AND {_ALIVE}
ORDER BY create_time, id
LIMIT $4
"""

GET = f"SELECT {COLUMNS} FROM worker_sessions WHERE id = $1 AND project_id = $2 AND {_ALIVE}"

REQUEST_DRAIN = f"""
UPDATE worker_sessions SET drain_requested = true WHERE id = $1 AND project_id = $2 AND {_ALIVE}
RETURNING {COLUMNS}
"""


@dataclass(frozen=True)
class WorkerSessionRow:
    id: str
    project_id: str
    worker_id: str
    name: str
    hostname: str
    server_id: str
    handlers: list[dict[str, str]]
    slots: int
    in_flight: int
    drain_requested: bool
    create_time: datetime
    seen_time: datetime


def _row(r: Any) -> WorkerSessionRow:
    values = dict(r)
    handlers = values["handlers"]
    values["handlers"] = json.loads(handlers) if isinstance(handlers, str) else handlers
    return WorkerSessionRow(**values)


class WorkerSessionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert(self, session_id: str, project_id: str, worker_id: str, name: str, hostname: str,
                     server_id: str, handlers: list[dict[str, str]], slots: int) -> None:
        await self._pool.execute(INSERT, session_id, project_id, worker_id, name, hostname, server_id,
                                 json.dumps(handlers), slots)

    async def delete(self, session_id: str) -> None:
        await self._pool.execute(DELETE, session_id)

    async def refresh(self, counts: list[tuple[str, int, int]]) -> list[str]:
        """(session, slots, in flight) of a hub's sessions; returns the ones asked to drain. Also forgets the
        sessions of server processes that are gone."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(FORGET_GONE_SERVERS)
            if not counts:
                return []
            rows = await conn.fetch(REFRESH, *[list(c) for c in zip(*counts, strict=True)])
        return [r["id"] for r in rows if r["drain_requested"]]

    async def list_sessions(self, project_id: str, cursor: tuple[datetime, str] | None,
                            limit: int) -> list[WorkerSessionRow]:
        t, i = cursor if cursor else (None, None)
        return [_row(r) for r in await self._pool.fetch(LIST, project_id, t, i, limit)]

    async def get(self, project_id: str, session_id: str) -> WorkerSessionRow:
        row = await self._pool.fetchrow(GET, session_id, project_id)
        if row is None:
            raise NotFound("worker", session_id)
        return _row(row)

    async def request_drain(self, project_id: str, session_id: str) -> WorkerSessionRow:
        row = await self._pool.fetchrow(REQUEST_DRAIN, session_id, project_id)
        if row is None:
            raise NotFound("worker", session_id)
        return _row(row)
