"""Every store operation that changes runs.status, tried from every status: it moves the run exactly
when model.TRANSITIONS allows it, and otherwise leaves it untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from strait_server import db
from strait_server.model import JobSpec, NewRun, RunStatus, can_transition
from strait_server.queue import Outcome, Queue
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.runs import RunStore

OWNER = "disp_test"
Op = Callable[[Queue, RunStore, str, str], Awaitable[object]]


async def _cancel(q: Queue, runs: RunStore, project: str, run_id: str) -> object:
    try:
        return await runs.cancel(project, run_id, "x")
    except Exception:  # FailedPrecondition for statuses that cannot be canceled
        return None


async def _settle(q: Queue, runs: RunStore, project: str, run_id: str) -> object:
    return await q.settle(OWNER, [Outcome(run_id=run_id, attempt=1, to_status=RunStatus.COMPLETED, output=None,
                                          error="", error_class="", delay_ms=0, record={})])


OPERATIONS: dict[str, tuple[Op, RunStatus]] = {
    "claim": (lambda q, r, p, i: q.claim(OWNER, 10), RunStatus.EXECUTING),
    "promote": (lambda q, r, p, i: q.promote_delayed(), RunStatus.QUEUED),
    "hand_back": (lambda q, r, p, i: q.hand_back(OWNER), RunStatus.QUEUED),
    "settle": (_settle, RunStatus.COMPLETED),
    "recover": (lambda q, r, p, i: q.recover(timedelta(seconds=5), timedelta(seconds=30), 5), RunStatus.QUEUED),
    "cancel": (_cancel, RunStatus.CANCELED),
}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


@pytest.mark.parametrize("op", sorted(OPERATIONS))
async def test_operation_respects_the_transition_table(pool: asyncpg.Pool, op: str) -> None:
    project = await ProjectStore(pool).create("sm", "sm")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x"))
    runs = RunStore(pool)
    queue = Queue(pool)
    action, target = OPERATIONS[op]
    for status in RunStatus:
        [inserted] = await runs.insert(job, [NewRun()])
        run_id = inserted.run.id
        # Put the run in `status`, owned by a dispatcher that is not alive (so recovery applies).
        await pool.execute("UPDATE runs SET status = 'canceled' WHERE id <> $1 AND status <> 'canceled'", run_id)
        await pool.execute(
            "UPDATE runs SET status = $2, attempt = 1, run_at = now() - interval '1 second', lease_owner = $3 "
            "WHERE id = $1", run_id, status.value, OWNER)
        await pool.execute("DELETE FROM run_queue")
        await pool.execute("DELETE FROM run_leases")
        if status is RunStatus.QUEUED:
            await pool.execute("INSERT INTO run_queue SELECT id, job_id, priority, run_at FROM runs WHERE id = $1",
                               run_id)
        if status is RunStatus.EXECUTING:
            await pool.execute("INSERT INTO run_leases VALUES ($1, $2, now() + interval '1 minute')", run_id, OWNER)
        await action(queue, runs, project.id, run_id)
        after = RunStatus(await pool.fetchval("SELECT status FROM runs WHERE id = $1", run_id))
        # The ready queue holds exactly the queued runs, whatever the operation did.
        queued = {r["id"] for r in await pool.fetch("SELECT id FROM runs WHERE status = 'queued'")}
        ready = {r["run_id"] for r in await pool.fetch("SELECT run_id FROM run_queue")}
        assert queued == ready, (op, status)
        # ...and the lease table exactly the executing ones.
        executing = {r["id"] for r in await pool.fetch("SELECT id FROM runs WHERE status = 'executing'")}
        leased = {r["run_id"] for r in await pool.fetch("SELECT run_id FROM run_leases")}
        assert executing == leased, (op, status)
        if can_transition(status, target) and status in _SOURCES[op]:
            assert after is target, (op, status)
        else:
            assert after is status, (op, status, after)


# Which source statuses each operation is designed to move (a subset of what the table allows).
_SOURCES: dict[str, set[RunStatus]] = {
    "claim": {RunStatus.QUEUED},
    "promote": {RunStatus.DELAYED},
    "hand_back": {RunStatus.EXECUTING},
    "settle": {RunStatus.EXECUTING},
    "recover": {RunStatus.EXECUTING},
    "cancel": set(RunStatus),
}


async def test_direct_dispatch_never_overtakes_a_waiting_run(pool: asyncpg.Pool) -> None:
    project = await ProjectStore(pool).create("dd", "dd")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x"))
    runs = RunStore(pool)
    # Nothing waiting: the run is written already claimed by the dispatcher, with both events and a lease.
    written = await runs.insert_dispatching(project.id, job.id, "", NewRun(payload='{"a": 1}'), OWNER)
    assert written is not None
    run, claimed = written
    assert run.status is RunStatus.EXECUTING and claimed.attempt == 1 and claimed.endpoint_url == "http://x"
    events = await runs.events_after(project.id, run.id, 0, 10)
    assert [(e.from_status, e.to_status) for e in events] == [("", "queued"), ("queued", "executing")]
    assert await pool.fetchval("SELECT owner FROM run_leases WHERE run_id = $1", run.id) == OWNER
    # A claimable run is waiting: the new one must queue behind it.
    await runs.insert_for_job(project.id, job.id, "", [NewRun()])
    assert await runs.insert_dispatching(project.id, "", "j", NewRun(), OWNER) is None
    # Disabled or unknown jobs are never written this way either.
    assert await runs.insert_dispatching(project.id, "job_missing", "", NewRun(), OWNER) is None
