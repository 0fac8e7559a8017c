"""The project activity feed: run events in commit order, resumable by (xid, id).

A bigserial id is not commit order (transaction A takes id 10, B takes 11, B commits first). So every
event row carries the id of the transaction that wrote it (pg_current_xact_id()), and the feed only
serves rows whose xid is below the current snapshot's xmin: every transaction older than that has ended,
so no row can later appear below a position already served. A long transaction delays the feed; it
cannot make it skip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from strait_server.model import RunEvent

FEED = """
SELECT e.id, e.xid::text AS xid, e.run_id, e.job_id, e.seq, e.type, e.from_status, e.to_status, e.attempt,
    e.message, e.data, e.create_time
FROM run_events e
WHERE e.project_id = $1 AND (e.xid, e.id) > ($2::text::xid8, $3::bigint)
  AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
  AND ($4::text IS NULL OR e.job_id = $4)
  AND ($5::text[] IS NULL OR (e.type = 'status_change' AND e.to_status = ANY($5::text[])))
  AND ($6::jsonb IS NULL OR EXISTS (SELECT 1 FROM runs r WHERE r.id = e.run_id AND r.tags @> $6))
ORDER BY e.xid, e.id
LIMIT $7
"""
"""$1 project, $2/$3 cursor (xid as text, id), $4 job, $5 statuses, $6 tags, $7 limit."""

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


@dataclass(frozen=True, order=True)
class Cursor:
    xid: int
    id: int


@dataclass(frozen=True)
class FeedFilter:
    job_id: str | None
    statuses: list[str] | None
    tags: dict[str, str] | None


class FeedStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def now(self) -> Cursor:
        """A cursor after everything already committed: the feed continues with live events."""
        return Cursor(int(await self._pool.fetchval(HORIZON)), 0)

    async def read(self, project_id: str, after: Cursor, f: FeedFilter, limit: int) -> list[tuple[Cursor, RunEvent]]:
        rows = await self._pool.fetch(FEED, project_id, str(after.xid), after.id, f.job_id, f.statuses,
                                      f.tags, limit)
        return [(Cursor(int(r["xid"]), r["id"]), _event(r)) for r in rows]


def _event(row: Any) -> RunEvent:
    return RunEvent(run_id=row["run_id"], job_id=row["job_id"], seq=row["seq"], type=row["type"],
                    from_status=row["from_status"], to_status=row["to_status"], attempt=row["attempt"],
                    message=row["message"], data=json.dumps(row["data"]), create_time=row["create_time"])
