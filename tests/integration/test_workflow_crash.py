"""A workflow run survives its server being killed: a `strait serve` subprocess running a workflow of 94 job steps
(chains, fan-outs and fan-ins) is SIGKILLed three times mid-run and restarted on the same database each time.
Job runs lost with it are delivered again (at least once), but every step still has exactly one job run,
completes exactly once, passes its output on, and the run completes."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack

import asyncpg

from strait_server.config import Settings
from tests.conftest import Api, connect
from tests.integration.test_workflow_runs import Flows, R, step
from tests.processes import serve_subprocess
from tests.sink import Received, Reply, Sink
from tests.workflow_checks import completed_once

LANES, CHAIN, FAN = 4, 12, 10
# Owners are declared dead 1 s after their last heartbeat, then their runs recovered 1 s later: a restart
# takes the lost runs back in about 2 s.
SERVER_ENV = {"STRAIT_OWNER_STALE_AFTER": "1s"}


def dag() -> dict[str, list[str]]:
    """ref -> depends_on: a root; per lane a chain, a fan-out from its end and a join of the fan-out; an end
    joining the lanes."""
    parents: dict[str, list[str]] = {"start": []}
    for k in range(LANES):
        for i in range(CHAIN):
            parents[f"c{k}_{i}"] = [f"c{k}_{i - 1}" if i else "start"]
        for i in range(FAN):
            parents[f"f{k}_{i}"] = [f"c{k}_{CHAIN - 1}"]
        parents[f"j{k}"] = [f"f{k}_{i}" for i in range(FAN)]
    parents["end"] = [f"j{k}" for k in range(LANES)]
    return parents


def template(ref: str, parents: list[str]) -> str:
    """The step's input: its ref and what each parent answered, read from the parents' outputs."""
    seen = ", ".join(f'"{{{{ steps.{p}.output.ref }}}}"' for p in parents)
    return f'{{"ref": "{ref}", "after": [{seen}]}}'


class Killer:
    """Kills the current server when a condition on the endpoint's traffic is met."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.answers = 0
        self.kill_at_answer = 0  # kill instead of sending this answer (0: none)
        self.lost: set[str] = set()  # job runs at the endpoint when a server died: their answers went nowhere
        self.armed = self.armed_once = False  # kill at the next step end committed (see on_step_end)
        self.killed = asyncio.Event()
        self.notified = 0  # step-end notifications seen while listening
        # The endpoint answers while this is set: closed from kill 1 until kill 2 is armed and from kill 2 until
        # kill 3 is, so that a server started after a kill cannot run far ahead (or finish the run) while it
        # starts up, before the test arms the next kill.
        self.answering = asyncio.Event()
        self.answering.set()

    def kill(self, sink: Sink) -> None:
        assert self.proc is not None
        self.lost |= {r.run_id for r in sink.for_path("/step") if r.done_at is None}
        self.proc.kill()
        self.killed.set()

    def answer(self, sink: Sink) -> Callable[[Received], str]:
        def step_output(received: Received) -> str:
            """The step's ref. At the chosen answer, the server dies before receiving it."""
            self.answers += 1
            ref = received.json()["ref"]
            if self.answers == self.kill_at_answer:
                self.answering.clear()
                self.kill(sink)
            elif 0 < self.kill_at_answer < self.answers and ref.endswith(f"_{CHAIN - 1}") and not self.armed_once:
                # After kill 2, a lane's chain ends: its fan-out starts in the move that this answer causes.
                self.armed = self.armed_once = True
            return json.dumps({"ref": ref})
        return step_output

    def on_step_end(self, sink: Sink) -> Callable[..., None]:
        def notified(*_: object) -> None:
            """The NOTIFY that wakes the engines when a step's job run ended: the kill lands before, during or
            after the move that takes the end."""
            self.notified += 1
            if self.armed and self.proc is not None and self.proc.returncode is None:
                self.armed = False
                self.kill(sink)
        return notified


STALLED = """
SELECT (SELECT json_agg(json_build_object('id', id, 'status', status, 'run_at', run_at, 'lease_owner', lease_owner,
                                          'lost', lost_count, 'attempt', attempt))
        FROM runs WHERE status NOT IN ('completed')) AS open_runs,
    (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM workflow_step_runs GROUP BY status) s)
        AS steps,
    (SELECT json_agg(l) FROM run_leases l) AS leases,
    (SELECT json_agg(d) FROM dispatchers d) AS dispatchers,
    (SELECT count(*) FROM workflow_progress) AS progress_rows,
    now() AS now
"""


async def stalled(settings: Settings, killer: Killer) -> str:
    """What a failure needs to say when the server made no visible progress: the server's state, the open runs,
    leases and dispatchers."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow(STALLED)
    finally:
        await conn.close()
    assert row is not None and killer.proc is not None
    return (f"server exit code {killer.proc.returncode}, {killer.answers} answers, {killer.notified} notified, "
            f"{dict(row)}")


async def test_a_workflow_survives_three_sigkills_of_its_server_with_one_job_run_per_step(
        settings: Settings, sink: Sink) -> None:
    parents = dag()
    assert len(parents) == 94
    killer = Killer()
    url = sink.script("/step", then=Reply(block=killer.answering, delay=0.05, answer=killer.answer(sink)))
    listener = await asyncpg.connect(settings.database_url)
    async with AsyncExitStack() as servers:
        servers.push_async_callback(listener.close)
        proc, port = await servers.enter_async_context(serve_subprocess(settings, **SERVER_ENV))
        killer.proc = proc
        api = await connect(port, settings.admin_key)
        job = await api.create_job("step", url)
        flows = Flows(api, sink)
        await flows.create(*[step(ref, "step", *ps, input_template_json=template(ref, ps))
                             for ref, ps in parents.items()])
        run = await flows.trigger()

        async def restart(api: Api) -> Api:
            assert killer.proc is not None
            try:
                await asyncio.wait_for(killer.killed.wait(), 30)
            except TimeoutError:
                raise AssertionError(f"no kill within 30 s: {await stalled(settings, killer)}") from None
            killer.killed.clear()
            await killer.proc.wait()
            await api.channel.close()
            proc, port = await servers.enter_async_context(serve_subprocess(settings, **SERVER_ENV))
            killer.proc = proc
            return await connect(port, settings.admin_key, job.project_id)

        # 1. While the first chain steps are at the endpoint: they are lost in flight.
        await sink.wait_for(8, "/step", timeout=30)
        killer.answering.clear()  # until kill 2 is armed: the next server must not run far ahead meanwhile
        killer.kill(sink)
        api = await restart(api)
        # 2. Instead of an answer (the endpoint did the work; the server never hears of it).
        killer.kill_at_answer = killer.answers + 20
        killer.answering.set()
        api = await restart(api)
        # 3. As the end of a step is committed, when the engine wakes up to move the run on (a lane's chain end,
        # fanning the lane out, when one comes after kill 2; else the next step end: under load the chain ends
        # may all have come before).
        killer.armed = killer.armed_once = True
        await listener.add_listener("strait_workflow_progress", killer.on_step_end(sink))
        killer.answering.set()
        api = await restart(api)

        done = await Flows(api, sink).wait(run.id, timeout=60)
        listed = await Flows(api, sink).steps(run.id)
        await api.channel.close()

    assert done.status == R.WORKFLOW_RUN_STATUS_COMPLETED, done.error
    assert list(listed) == list(parents)
    assert {s.status for s in listed.values()} == {R.STEP_RUN_STATUS_COMPLETED}
    conn = await asyncpg.connect(settings.database_url)
    try:
        steps = await completed_once(conn, run.id, parents)
        job_runs = {r["id"]: r for r in await conn.fetch(
            "SELECT id, attempt, lost_count FROM runs WHERE workflow_step_run_id IS NOT NULL")}
    finally:
        await conn.close()
    for ref, s in listed.items():
        assert s.job_run_id == steps[ref]["job_run_id"] and json.loads(s.output_json) == {"ref": ref}

    # At least once: every step's one job run was posted, some more than once (lost with a server), always
    # with the same input, which holds what each parent answered.
    posts: dict[str, list[Received]] = defaultdict(list)
    for r in sink.for_path("/step"):
        posts[r.run_id].append(r)
    assert set(posts) == {s.job_run_id for s in listed.values()}
    for ref, s in listed.items():
        bodies = {r.body for r in posts[s.job_run_id]}
        assert len(bodies) == 1 and json.loads(bodies.pop()) == {"ref": ref, "after": parents[ref]}
    # What was at the endpoint when a server died was delivered again. A loss is not the run's fault: each
    # delivery is attempt 1, and a run was lost at least once per extra delivery (also when claimed, not posted).
    assert killer.lost and all(len(posts[run_id]) >= 2 for run_id in killer.lost), killer.lost
    assert len(job_runs) == len(parents)
    for run_id, deliveries in posts.items():
        assert {r.headers["X-Attempt"] for r in deliveries} == {"1"}
        assert job_runs[run_id]["attempt"] == 1 and len(deliveries) - 1 <= job_runs[run_id]["lost_count"] <= 3
