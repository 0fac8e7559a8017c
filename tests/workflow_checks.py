"""What must hold of a workflow run of job steps that ended COMPLETED, read from the database itself: every
step completed exactly once, with exactly one job run, its parents counted exactly once, and the run's events
numbered without gaps. Shared by the fan-in race and the crash tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg

STEPS = """
SELECT s.id, s.step_ref, s.status, s.job_run_id, s.parents_total, s.parents_done, s.parents_ok, s.parents_failed,
    s.parents_skipped, s.output,
    coalesce(array_agg(r.id ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS job_runs,
    coalesce(array_agg(r.status ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS job_run_statuses
FROM workflow_step_runs s LEFT JOIN runs r ON r.workflow_step_run_id = s.id
WHERE s.workflow_run_id = $1
GROUP BY s.id
"""

RUNS_NAMING_THE_RUN = """
SELECT id, metadata ->> 'workflow_step' AS step_ref, workflow_step_run_id FROM runs
WHERE metadata ->> 'workflow_run_id' = $1
"""


async def completed_once(conn: asyncpg.Connection, run_id: str, parents: dict[str, list[str]]) -> dict[str, Any]:
    """Asserts that the run `run_id`, of the job steps `parents` (ref -> depends_on), completed with each step
    run once; returns each step's row (with `job_runs`). Every problem found is listed in the failure."""
    run = await conn.fetchrow("SELECT status, steps_open, steps_failed, event_seq FROM workflow_runs WHERE id = $1",
                              run_id)
    assert run is not None, run_id
    problems = [] if (run["status"], run["steps_open"], run["steps_failed"]) == ("completed", 0, 0) else [
        f"run: {dict(run)}"]
    steps = {r["step_ref"]: r for r in await conn.fetch(STEPS, run_id)}
    if set(steps) != set(parents):
        problems.append(f"steps {sorted(set(steps) ^ set(parents))} missing or unexpected")
    problems += [p for ref, s in steps.items() for p in _step_problems(ref, s, parents.get(ref, []))]
    problems += _stray_job_runs(await conn.fetch(RUNS_NAMING_THE_RUN, run_id), steps)
    problems += _event_problems(await conn.fetch(
        "SELECT seq, type, step_ref, to_status FROM workflow_run_events WHERE workflow_run_id = $1 ORDER BY seq",
        run_id), run["event_seq"], parents)
    assert not problems, f"workflow run {run_id}: " + "; ".join(problems[:20])
    return steps


def _step_problems(ref: str, s: asyncpg.Record, parents: list[str]) -> list[str]:
    problems = []
    if s["status"] != "completed":
        problems.append(f"{ref}: status {s['status']}")
    # One job run per step run (the unique index says at most one; the engine must also create one).
    if list(s["job_runs"]) != [s["job_run_id"]] or list(s["job_run_statuses"]) != ["completed"]:
        problems.append(f"{ref}: job runs {list(s['job_runs'])} ({list(s['job_run_statuses'])}), "
                        f"step names {s['job_run_id']}")
    # Each parent's end added to the counters once: a lost or doubled outcome shows here.
    want = len(parents)
    counts = (s["parents_total"], s["parents_done"], s["parents_ok"], s["parents_failed"], s["parents_skipped"])
    if counts != (want, want, want, 0, 0):
        problems.append(f"{ref}: parents (total, done, ok, failed, skipped) = {counts}, expected {want} ok")
    return problems


def _stray_job_runs(by_metadata: list[asyncpg.Record], steps: dict[str, asyncpg.Record]) -> list[str]:
    """No job run names the workflow run but the steps' own (a second run of a step, say)."""
    ids_of_steps = {s["job_run_id"] for s in steps.values()}
    strays = [dict(r) for r in by_metadata if r["id"] not in ids_of_steps]
    per_step = Counter(r["step_ref"] for r in by_metadata)
    if strays or len(by_metadata) != len(steps) or any(n > 1 for n in per_step.values()):
        return [f"{len(by_metadata)} job runs name the run for {len(steps)} steps; strays: {strays[:5]}"]
    return []


def _event_problems(events: list[asyncpg.Record], event_seq: int, parents: dict[str, list[str]]) -> list[str]:
    """Events numbered 1..event_seq; each step started and completed once; the run started and ended once."""
    problems = []
    if [e["seq"] for e in events] != list(range(1, event_seq + 1)):
        problems.append(f"event sequences are not 1..{event_seq}")
    moves = Counter((e["step_ref"], e["to_status"]) for e in events if e["type"] == "step_status")
    for ref in parents:
        if (moves[(ref, "running")], moves[(ref, "completed")]) != (1, 1):
            problems.append(f"{ref}: started {moves[(ref, 'running')]}, completed {moves[(ref, 'completed')]} times")
    runs = [e["to_status"] for e in events if e["type"] == "run_status"]
    if runs != ["running", "completed"]:
        problems.append(f"run statuses {runs}")
    return problems
