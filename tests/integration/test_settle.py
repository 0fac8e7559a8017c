"""The settle buffer against a real database: an outcome PostgreSQL refuses holds no other outcome back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from strait_server import db
from strait_server.dispatch.settle import SettleBuffer
from strait_server.model import JobSpec, NewRun, RunStatus
from strait_server.queue import Outcome, Queue
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.runs import RunStore
from strait_server.tasks import Supervisor
from tests.conftest import eventually

OWNER = "disp_settle"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


def _completed(run_id: str, output: str) -> Outcome:
    return Outcome(run_id=run_id, attempt=1, to_status=RunStatus.COMPLETED, output=output, error="",
                   error_class="", delay_ms=0, record={"attempt": 1, "status_code": 200})


async def test_an_unstorable_outcome_is_written_without_its_output_and_the_batch_goes_on(
        pool: asyncpg.Pool) -> None:
    project = await ProjectStore(pool).create("settle", "settle")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x"))
    await RunStore(pool).insert(job, [NewRun(), NewRun()])
    queue = Queue(pool)
    bad, good = (run.id for run in await queue.claim(OWNER, 10))
    settled: list[str] = []
    buffer = SettleBuffer(queue, OWNER, flush_interval_s=0.001, batch_size=10, supervisor=Supervisor(),
                          on_settled=lambda _outcomes, ids: settled.extend(ids))
    # A NUL, which PostgreSQL's text refuses: the batch statement fails as a whole, every time it is tried.
    buffer.add(_completed(bad, '{"a": "b\x00c"}'))
    buffer.add(_completed(good, '{"ok": true}'))
    await buffer.flush()
    assert sorted(settled) == sorted([bad, good])
    rows = {r["id"]: r for r in await pool.fetch("SELECT id, status, output, error FROM runs")}
    assert (rows[good]["status"], rows[good]["output"]) == ("completed", '{"ok": true}')
    assert rows[bad]["status"] == "completed" and rows[bad]["output"] is None
    assert rows[bad]["error"].startswith("outcome not storable: ")


async def test_stopping_during_a_write_keeps_the_batch_and_writes_it(pool: asyncpg.Pool, database_url: str) -> None:
    project = await ProjectStore(pool).create("settle", "settle")
    job = await JobStore(pool).create(project.id, JobSpec(slug="j", name="j", endpoint_url="http://x"))
    await RunStore(pool).insert(job, [NewRun()])
    queue = Queue(pool)
    [run] = await queue.claim(OWNER, 10)
    buffer = SettleBuffer(queue, OWNER, flush_interval_s=0.001, batch_size=10, supervisor=Supervisor(),
                          on_settled=lambda _outcomes, _ids: None)
    blocker = await asyncpg.connect(database_url)
    try:
        # The run's row locked elsewhere: the buffer's write waits on it, and stop() comes in the middle.
        writing = blocker.transaction()
        await writing.start()
        await blocker.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
        buffer.start()
        buffer.add(_completed(run.id, '{"ok": true}'))

        async def waiting() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM pg_stat_activity "
                                            "WHERE wait_event_type = 'Lock' AND datname = current_database()"))
        await eventually(waiting, 10)
        stopping = asyncio.create_task(buffer.stop())
        await eventually(lambda: _settle_canceled(buffer), 10)
        await writing.rollback()
        await asyncio.wait_for(stopping, 10)
    finally:
        await blocker.close()
    assert await pool.fetchval("SELECT status FROM runs WHERE id = $1", run.id) == "completed"


async def _settle_canceled(buffer: SettleBuffer) -> bool:
    """Whether stop() has cancelled the buffer's loop (the write it was in goes back to the buffer)."""
    task = buffer._task  # what the test waits for is internal to the buffer
    return task is None or task.done()
