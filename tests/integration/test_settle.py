"""The settle buffer against a real database: an outcome PostgreSQL refuses holds no other outcome back."""

from __future__ import annotations

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
