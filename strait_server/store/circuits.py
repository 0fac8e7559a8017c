"""Endpoint circuit breakers: one row per (project, endpoint URL) that failed since its last success."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from strait_server.model import EventType
from strait_server.store.fragments import insert_events

_COLUMNS = "project_id, endpoint_url, state, consecutive_failures, open_until, probe_until, last_error, update_time"

LOAD = f"SELECT {_COLUMNS} FROM endpoint_circuits"

LIST = f"""
SELECT {_COLUMNS} FROM endpoint_circuits WHERE project_id = $1 AND endpoint_url > $2 ORDER BY endpoint_url LIMIT $3
"""

RECORD_FAILURE = f"""
INSERT INTO endpoint_circuits AS c (project_id, endpoint_url, state, consecutive_failures, open_until, last_error)
VALUES ($1, $2, CASE WHEN $3 <= 1 THEN 'open' ELSE 'closed' END, 1,
        CASE WHEN $3 <= 1 THEN now() + $4::interval END, $5)
ON CONFLICT (project_id, endpoint_url) DO UPDATE SET
    consecutive_failures = c.consecutive_failures + 1,
    -- A failed probe reopens at once; a closed circuit opens at the threshold.
    state = CASE WHEN c.state = 'half_open' OR c.consecutive_failures + 1 >= $3 THEN 'open' ELSE c.state END,
    open_until = CASE WHEN c.state = 'half_open' OR (c.state = 'closed' AND c.consecutive_failures + 1 >= $3)
                      THEN now() + $4::interval ELSE c.open_until END,
    probe_until = NULL, last_error = $5, update_time = now()
RETURNING {_COLUMNS}, open_until = now() + $4::interval AS opened
"""
"""$1 project, $2 URL, $3 threshold, $4 open period, $5 error. `opened`: this failure opened the circuit."""

RECORD_SUCCESS = """
WITH gone AS (
    DELETE FROM endpoint_circuits WHERE project_id = $1 AND endpoint_url = $2 RETURNING state
), released AS (
    -- The circuit closes: runs put back for it are due now, not at the end of the wait they were given.
    UPDATE run_queue q SET run_at = now()
    FROM runs r JOIN jobs j ON j.id = r.job_id
    WHERE (SELECT state FROM gone) IN ('open', 'half_open')
      AND q.run_id = r.id AND r.project_id = $1 AND j.endpoint_url = $2 AND r.status = 'queued'
      AND r.error_class = 'circuit_open' AND q.run_at > now()
)
SELECT state FROM gone
"""
"""$1 project, $2 URL: forgets the endpoint's failures. Returns the state it had; no row: it had none."""

TRY_PROBE = f"""
UPDATE endpoint_circuits SET state = 'half_open', probe_until = now() + $3::interval, update_time = now()
WHERE project_id = $1 AND endpoint_url = $2
  AND ((state = 'open' AND open_until <= now()) OR (state = 'half_open' AND probe_until <= now()))
RETURNING {_COLUMNS}
"""
"""$1 project, $2 URL, $3 how long the probe may take. A row: this caller sends the one probe."""

READ = f"SELECT {_COLUMNS} FROM endpoint_circuits WHERE project_id = $1 AND endpoint_url = $2"

NOTE_ON_RUN = f"""
WITH upd AS (
    UPDATE runs SET event_seq = event_seq + 1 WHERE id = $1
    RETURNING id, project_id, job_id, event_seq, attempt
)
{insert_events("upd", EventType.CIRCUIT, message="$2", returning="run_id")}
"""
"""$1 run, $2 message: the run's dispatch opened or closed its endpoint's circuit."""


@dataclass(frozen=True, kw_only=True)
class Circuit:
    project_id: str
    endpoint_url: str
    state: str
    consecutive_failures: int
    open_until: datetime | None
    probe_until: datetime | None
    last_error: str
    update_time: datetime


def _circuit(row: Any) -> Circuit:
    return Circuit(project_id=row["project_id"], endpoint_url=row["endpoint_url"], state=row["state"],
                   consecutive_failures=row["consecutive_failures"], open_until=row["open_until"],
                   probe_until=row["probe_until"], last_error=row["last_error"], update_time=row["update_time"])


class CircuitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self) -> list[Circuit]:
        return [_circuit(r) for r in await self._pool.fetch(LOAD)]

    async def read(self, project_id: str, url: str) -> Circuit | None:
        row = await self._pool.fetchrow(READ, project_id, url)
        return None if row is None else _circuit(row)

    async def list(self, project_id: str, after_url: str, limit: int) -> list[Circuit]:
        return [_circuit(r) for r in await self._pool.fetch(LIST, project_id, after_url, limit)]

    async def failed(self, project_id: str, url: str, threshold: int, open_for: timedelta,
                     error: str) -> tuple[Circuit, bool]:
        row = await self._pool.fetchrow(RECORD_FAILURE, project_id, url, threshold, open_for, error[:1024])
        assert row is not None
        return _circuit(row), bool(row["opened"])

    async def succeeded(self, project_id: str, url: str) -> str | None:
        """Closes the circuit (after a success, or ResetEndpointCircuit); the runs waiting for it are due at
        once. Returns the state it had (None: it had none)."""
        value = await self._pool.fetchval(RECORD_SUCCESS, project_id, url)
        return None if value is None else str(value)

    async def try_probe(self, project_id: str, url: str, probe_for: timedelta) -> Circuit | None:
        row = await self._pool.fetchrow(TRY_PROBE, project_id, url, probe_for)
        return None if row is None else _circuit(row)

    async def note(self, run_id: str, message: str) -> None:
        await self._pool.execute(NOTE_ON_RUN, run_id, message)
