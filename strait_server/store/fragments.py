"""The SQL every run write shares: the one way rows enter run_events and run_queue, and the expiry rule.

Every statement that changes a run bumps runs.event_seq and writes its event with the INSERT built here, from
a CTE of the rows it changed; a run that becomes queued enters the ready queue the same way. So the shape of an
event (its sequence, attempt, type and statuses) and of a ready row is defined once for every kind of run,
workflow steps and worker tasks included.

Fragments, not a function or trigger: the rows are written by the same statement as the change, exactly as
before (no extra round trip, no per-row trigger cost), and the statuses and types come from the enums.
"""

from __future__ import annotations

from strait_server.model import EventType, RunStatus

_COLUMNS = "run_id, project_id, job_id, seq, type, from_status, to_status, attempt, message, data"


def literal(value: RunStatus | EventType) -> str:
    """A status or event type as an SQL literal."""
    return f"'{value.value}'"


def _sql(value: RunStatus | EventType | str) -> str:
    """An enum member as its literal; a string as the SQL expression it is (a column, a parameter)."""
    return literal(value) if isinstance(value, RunStatus | EventType) else value


def insert_events(source: str, event_type: EventType | str, *, from_status: RunStatus | str = "''",
                  to_status: RunStatus | str = "''", message: str = "''", data: str = "'{}'",
                  attempt: str = "attempt", seq: str = "event_seq", returning: str = "") -> str:
    """INSERT of one event per row of `source`, a CTE (or subquery) with id, project_id, job_id and the
    columns the expressions name (event_seq and attempt by default: the run's values after the change).
    Expressions are SQL; RunStatus and EventType members become literals."""
    sql = (f"INSERT INTO run_events ({_COLUMNS})\n"
           f"SELECT id, project_id, job_id, {seq}, {_sql(event_type)}, {_sql(from_status)}, {_sql(to_status)}, "
           f"{attempt}, {message}, {data} FROM {source}")
    return f"{sql}\nRETURNING {returning}" if returning else sql


def status_changes(source: str, from_status: RunStatus | str, to_status: RunStatus | str, *,
                   message: str = "''", attempt: str = "attempt", seq: str = "event_seq",
                   returning: str = "") -> str:
    """The status_change events of the rows of `source` (see insert_events)."""
    return insert_events(source, EventType.STATUS_CHANGE, from_status=from_status, to_status=to_status,
                         message=message, attempt=attempt, seq=seq, returning=returning)


def enqueue(source: str, gate: str, *, where: str = "", columns: str = "") -> str:
    """INSERT of the ready-queue row of each row of `source` (id, job_id, priority, run_at), gated by the SQL
    expression `gate` (strait_gate(...), strait_run_gate(id), or a gate column; see migrations). `columns`
    qualifies the source's columns when `source` is a join (e.g. "ins.")."""
    c = columns
    sql = (f"INSERT INTO run_queue (run_id, job_id, priority, run_at, gate)\n"
           f"SELECT {c}id, {c}job_id, {c}priority, {c}run_at, {gate} FROM {source}")
    return f"{sql} WHERE {where}" if where else sql


def gate_of(job: str, concurrency_key: str) -> str:
    """The ready-queue gate of a run of the job row `job` (an alias, or a table name) with the SQL expression
    `concurrency_key`: strait_gate (see migrations), the one definition of which runs the plain claim leaves
    to the gated claim (flow control) or to the worker plane (worker jobs)."""
    j = f"{job}." if job else ""
    return (f"strait_gate({j}id, {concurrency_key}, {j}max_concurrency, {j}max_concurrency_per_key, "
            f"{j}rate_limit_max, {j}execution_window_cron, {j}execution_mode, {j}queue)")


def expires_at(start: str, ttl_ms: str) -> str:
    """When a run with time-to-live `ttl_ms` (0: none) counted from `start` expires: NULL for none."""
    return f"CASE WHEN {ttl_ms} > 0 THEN {start} + {ttl_ms} * interval '1 millisecond' END"
