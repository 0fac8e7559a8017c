"""What code running inside a run writes: log lines, progress, heartbeats, checkpoints, output, and its
own completion or failure. Every statement is fenced by the token's attempt and status 'executing'."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from strait_server.errors import FailedPrecondition, NotFound
from strait_server.model import EventType, Run, RunStatus
from strait_server.store.fragments import insert_events, status_changes
from strait_server.store.runs import RUN_COLUMNS, run_from_row
from strait_server.telemetry.metrics import Metrics

APPEND_EVENT = f"""
WITH upd AS (
    UPDATE runs SET event_seq = event_seq + 1, update_time = now(),
        checkpoint = coalesce($6, checkpoint),
        checkpoint_time = CASE WHEN $6::text IS NULL THEN checkpoint_time ELSE now() END,
        output = coalesce($7, output)
    WHERE id = $1 AND status = 'executing' AND attempt = $2
    RETURNING id, project_id, job_id, event_seq, attempt
)
{insert_events("upd", "$3", message="$4", data="$5", returning="seq")}
"""
"""$1 run, $2 attempt, $3 event type, $4 message, $5 data, $6 checkpoint (or NULL), $7 output (or NULL)."""

APPEND_EVENTS = f"""
WITH r AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY
        AS r(run_id, attempt, type, message, data, n)
), per_run AS (
    SELECT run_id, attempt, count(*)::int AS k FROM r GROUP BY run_id, attempt
), upd AS (
    UPDATE runs SET event_seq = runs.event_seq + per_run.k, update_time = now()
    FROM per_run
    WHERE runs.id = per_run.run_id AND runs.status = 'executing' AND runs.attempt = per_run.attempt
    RETURNING runs.id, runs.project_id, runs.job_id, runs.event_seq, runs.attempt, per_run.k
), ev AS (
    SELECT upd.id, upd.project_id, upd.job_id, upd.attempt, r.type, r.message, r.data,
        upd.event_seq - upd.k + row_number() OVER (PARTITION BY upd.id ORDER BY r.n) AS seq
    FROM upd JOIN r ON r.run_id = upd.id AND r.attempt = upd.attempt
)
{insert_events("ev", "type", message="message", data="data", seq="seq", returning="run_id, seq")}
"""
"""Events of several runs at once ($1 runs, $2 attempts, $3 types, $4 messages, $5 data), each run's in the
order given; the runs not executing that attempt get none. Returns (run_id, seq) of the events written."""

HEARTBEAT = f"""
WITH upd AS (
    UPDATE runs SET event_seq = event_seq + 1, update_time = now(),
        deadline = now() + timeout_ms * interval '1 millisecond'
    WHERE id = $1 AND status = 'executing' AND attempt = $2
    RETURNING id, project_id, job_id, event_seq, attempt, deadline
), lease AS (
    UPDATE run_leases l SET deadline = upd.deadline FROM upd WHERE l.run_id = $1 AND upd.id = $1
), ev AS (
    {insert_events("upd", EventType.HEARTBEAT)}
)
SELECT deadline FROM upd
"""

FINISH = f"""
WITH upd AS (
    UPDATE runs SET status = $3, output = coalesce($4, output), error = $5, error_class = $6,
        finish_time = now(), update_time = now(), lease_owner = NULL, deadline = NULL,
        event_seq = event_seq + 1
    WHERE id = $1 AND status = 'executing' AND attempt = $2
    RETURNING {RUN_COLUMNS}, event_seq
), released AS (
    DELETE FROM run_leases l WHERE l.run_id = $1 AND EXISTS (SELECT FROM upd)
), ev AS (
    {status_changes("upd", RunStatus.EXECUTING, "status", message="error")}
)
SELECT * FROM upd
"""
"""$1 run, $2 attempt, $3 completed or failed, $4 output (or NULL), $5 error, $6 error class."""

STATE = "SELECT status, attempt, project_id FROM runs WHERE id = $1"


@dataclass(frozen=True)
class Heartbeat:
    canceled: bool
    deadline: datetime | None


class RunContextStore:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics | None = None) -> None:
        self._pool = pool
        self._metrics = metrics or Metrics()  # counts the runs finished by their code

    async def refusal(self, run_id: str, attempt: int) -> FailedPrecondition:
        """Why a call about this attempt was refused (NotFound is raised for an unknown run)."""
        return await self._refuse(run_id, attempt)

    async def _refuse(self, run_id: str, attempt: int) -> FailedPrecondition:
        row = await self._pool.fetchrow(STATE, run_id)
        if row is None:
            raise NotFound("run", run_id)
        if row["attempt"] != attempt:
            return FailedPrecondition(f"attempt {attempt} of run {run_id!r} is over (now at {row['attempt']})",
                                      reason="ATTEMPT_SUPERSEDED", subject=run_id)
        return FailedPrecondition(f"run {run_id!r} is {row['status']}; its attempt can no longer report",
                                  reason="RUN_NOT_EXECUTING", subject=run_id)

    async def append(self, run_id: str, attempt: int, type_: str, message: str, data: dict[str, Any], *,
                     checkpoint: str | None = None, output: str | None = None) -> int:
        seq = await self._pool.fetchval(APPEND_EVENT, run_id, attempt, type_, message, data, checkpoint, output)
        if seq is None:
            raise await self._refuse(run_id, attempt)
        return int(seq)

    async def append_many(self, events: list[tuple[str, int, str, str, dict[str, Any]]]) -> list[int | None]:
        """Events (run, attempt, type, message, data) in one statement: each one's sequence number, or None
        where its run is no longer executing that attempt."""
        if not events:
            return []
        rows = await self._pool.fetch(APPEND_EVENTS, *(list(column) for column in zip(*events, strict=True)))
        seqs: dict[str, list[int]] = {}
        for row in rows:
            seqs.setdefault(row["run_id"], []).append(row["seq"])
        for written in seqs.values():
            written.sort(reverse=True)  # each run's events were numbered in the order given: pop() hands them out
        return [seqs[run_id].pop() if seqs.get(run_id) else None for run_id, *_ in events]

    async def heartbeat(self, run_id: str, attempt: int) -> Heartbeat:
        deadline = await self._pool.fetchval(HEARTBEAT, run_id, attempt)
        if deadline is not None:
            return Heartbeat(canceled=False, deadline=deadline)
        row = await self._pool.fetchrow(STATE, run_id)
        if row is not None and row["attempt"] == attempt and row["status"] == RunStatus.CANCELED.value:
            return Heartbeat(canceled=True, deadline=None)  # not an error: the code should stop
        raise await self._refuse(run_id, attempt)

    async def finish(self, run_id: str, attempt: int, status: RunStatus, output: str | None, error: str,
                     error_class: str) -> Run:
        row = await self._pool.fetchrow(FINISH, run_id, attempt, status.value, output, error, error_class)
        if row is None:
            raise await self._refuse(run_id, attempt)
        self._metrics.transition("executing", status.value)
        return run_from_row(row)
