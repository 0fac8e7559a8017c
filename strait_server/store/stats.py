"""Counts for the metrics endpoint."""

from __future__ import annotations

import asyncpg

RUNS_BY_QUEUE = """
SELECT j.queue, s.status, count(*) AS n
FROM (
    SELECT job_id, 'queued' AS status FROM run_queue
    UNION ALL
    SELECT job_id, 'executing' FROM run_leases
    UNION ALL
    SELECT job_id, 'delayed' FROM runs WHERE status = 'delayed'
) s JOIN jobs j ON j.id = s.job_id
GROUP BY j.queue, s.status
"""
"""Unfinished runs by job queue and status. Reads only the small tables that mirror queued and executing runs
and the partial index of delayed runs: its cost grows with the runs waiting or running, never with history
(counting finished runs would scan the whole runs table, so there is no such count)."""


async def runs_by_queue(pool: asyncpg.Pool, budget_s: float) -> dict[tuple[str, str], int]:
    rows = await pool.fetch(RUNS_BY_QUEUE, timeout=budget_s)
    return {(r["queue"], r["status"]): int(r["n"]) for r in rows}
