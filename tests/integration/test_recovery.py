"""The recovery sweep: which dispatchers it declares dead, and what a lost run costs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from strait_server import db
from strait_server.model import JobSpec, NewRun
from strait_server.queue import Queue
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.runs import RunStore

STALE = timedelta(seconds=2)
GRACE = timedelta(seconds=30)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def _queued_run(pool: asyncpg.Pool, max_attempts: int) -> str:
    project = await ProjectStore(pool).create("rec", "rec")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x",
                                                          max_attempts=max_attempts))
    [inserted] = await RunStore(pool).insert(job, [NewRun()])
    return inserted.run.id


async def _run(pool: asyncpg.Pool, run_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT status, attempt, lost_count, error FROM runs WHERE id = $1", run_id)
    assert row is not None
    return row


async def _claim_by_dead_owner(pool: asyncpg.Pool, queue: Queue, run_id: str) -> None:
    """Claims the run for a dispatcher with no heartbeat row: it died right after claiming."""
    await pool.execute("UPDATE run_queue SET run_at = now() WHERE run_id = $1", run_id)  # past any backoff
    [claimed] = await queue.claim("disp_dead", 10)
    assert claimed.id == run_id


async def test_a_lost_run_is_given_its_attempt_back_until_the_cap_then_the_loss_counts(pool: asyncpg.Pool) -> None:
    queue = Queue(pool)
    run_id = await _queued_run(pool, max_attempts=2)
    for lost in (1, 2):
        await _claim_by_dead_owner(pool, queue, run_id)
        assert await queue.recover(STALE, GRACE, 2) == [run_id]
        run = await _run(pool, run_id)
        assert (run["status"], run["attempt"], run["lost_count"]) == ("queued", 0, lost)
        assert run["error"] == "dispatcher lost; requeued without spending an attempt"
    # Past the cap, a loss is an attempt like any failure: retried while attempts remain, then crashed.
    await _claim_by_dead_owner(pool, queue, run_id)
    await queue.recover(STALE, GRACE, 2)
    run = await _run(pool, run_id)
    assert (run["status"], run["attempt"], run["lost_count"], run["error"]) == (
        "queued", 1, 2, "dispatcher lost; retry scheduled")
    await _claim_by_dead_owner(pool, queue, run_id)
    await queue.recover(STALE, GRACE, 2)
    run = await _run(pool, run_id)
    assert (run["status"], run["attempt"], run["error"]) == ("crashed", 2, "dispatcher lost")


async def test_a_stale_dispatcher_keeps_its_runs_while_it_renews_after_being_suspected(pool: asyncpg.Pool) -> None:
    """After a database outage every heartbeat is stale at once: a live dispatcher must not look dead."""
    queue = Queue(pool)
    run_id = await _queued_run(pool, max_attempts=3)
    await queue.heartbeat("disp_live", "host", 1)
    [claimed] = await queue.claim("disp_live", 10)
    assert claimed.id == run_id
    await pool.execute("UPDATE dispatchers SET heartbeat_time = now() - interval '1 minute'")  # the outage

    assert await queue.recover(STALE, GRACE, 5) == []  # suspected, not yet declared dead
    assert (await _run(pool, run_id))["status"] == "executing"
    await queue.heartbeat("disp_live", "host", 1)  # it renews once the database is back
    await pool.execute("UPDATE dispatchers SET heartbeat_time = now() - interval '1 minute'")
    assert await queue.recover(STALE, GRACE, 5) == []  # suspected afresh: the renewal cleared the old mark
    assert (await _run(pool, run_id))["status"] == "executing"

    # Silent for another staleness period after being suspected: dead.
    await pool.execute("UPDATE dispatchers SET suspected_at = now() - interval '3 seconds'")
    assert await queue.recover(STALE, GRACE, 5) == [run_id]
    assert (await _run(pool, run_id))["status"] == "queued"
