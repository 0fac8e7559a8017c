"""A fan-in raced by several engines: four `strait serve` processes (each with the scheduler role, so each runs
the workflow engine) on one database, and workflow runs whose 200 parallel steps end together. Whichever
processes take the ends, the join is started exactly once, with every parent's output, and each step has
exactly one job run."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import asyncpg

from strait_server.config import Settings
from tests.conftest import connect
from tests.integration.test_workflow_runs import Flows, R, step
from tests.processes import serve_subprocesses
from tests.sink import Received, Reply, Sink
from tests.workflow_checks import completed_once

PROCESSES = 4
PARALLEL = 200
ROUNDS = 5
# Small claims and settles: the leaves are dispatched by every process and end in many commits, each waking
# every process's engine, so the join's parents are counted by several moves racing for the run.
SERVER_ENV = {"STRAIT_DISPATCH_CONCURRENCY": "300", "STRAIT_CLAIM_BATCH_SIZE": "20",
              "STRAIT_SETTLE_BATCH_SIZE": "10"}


async def test_a_join_starts_once_with_every_output_when_its_parents_end_together_in_four_processes(
        settings: Settings, sink: Sink) -> None:
    arrived: Counter[int] = Counter()
    released = {k: asyncio.Event() for k in range(ROUNDS)}

    async def hold_until_the_round_is_in(received: Received) -> None:
        # The round's leaves all answer at once, when the last of them arrives.
        round_ = received.json()["round"]
        arrived[round_] += 1
        if arrived[round_] == PARALLEL:
            released[round_].set()
        await released[round_].wait()

    def output(received: Received) -> str:
        body = received.json()
        return json.dumps({"round": body["round"], "i": body["i"], "run": received.run_id})

    leaves = [step(f"leaf_{i}", "leaf", "root", input_template_json=f'{{"round": "{{{{ input.round }}}}", "i": {i}}}')
              for i in range(PARALLEL)]
    parents = {"root": [], **{s.ref: ["root"] for s in leaves}, "join": [s.ref for s in leaves]}
    async with serve_subprocesses(settings, PROCESSES, **SERVER_ENV) as servers:
        api = await connect(servers[0][1], settings.admin_key)
        flows = Flows(api, sink)
        project_id = (await api.create_job("root", sink.url("/root"))).project_id
        await flows.job("leaf", then=Reply(action=hold_until_the_round_is_in, answer=output))
        await flows.job("join")
        await flows.create(step("root", "root"), *leaves, step("join", "join", *(s.ref for s in leaves)), slug="fan")
        # Each round triggered through another process, all at once.
        clients = [api] + [await connect(port, settings.admin_key, project_id) for _, port in servers[1:]]
        runs = await asyncio.gather(*(Flows(clients[k % PROCESSES], sink).trigger("fan", {"round": k})
                                      for k in range(ROUNDS)))
        done = await asyncio.gather(*(flows.wait(run.id, timeout=45) for run in runs))
        listed = [await flows.steps(run.id) for run in runs]
        for client in clients:
            await client.channel.close()

    assert [d.status for d in done] == [R.WORKFLOW_RUN_STATUS_COMPLETED] * ROUNDS
    for step_runs in listed:
        assert list(step_runs) == list(parents)
        assert {(s.status, bool(s.job_run_id)) for s in step_runs.values()} == {(R.STEP_RUN_STATUS_COMPLETED, True)}
    # Dispatched once each: no process died, so nothing was delivered twice.
    assert len(sink.for_path("/leaf")) == ROUNDS * PARALLEL
    assert len(sink.for_path("/root")) == ROUNDS
    joins = {r.json()["round"]: r for r in sink.for_path("/join")}
    assert len(sink.for_path("/join")) == ROUNDS and sorted(joins) == list(range(ROUNDS))

    conn = await asyncpg.connect(settings.database_url)
    try:
        moves_counting_the_join = []
        for k, run in enumerate(runs):
            steps = await completed_once(conn, run.id, parents)
            assert {ref: s.job_run_id for ref, s in listed[k].items()} == {
                ref: s["job_run_id"] for ref, s in steps.items()}
            assert await conn.fetchval("SELECT count(*) FROM runs WHERE metadata ->> 'workflow_run_id' = $1"
                                       " AND metadata ->> 'workflow_step' = 'join'", run.id) == 1
            join_input = joins[k].json()
            assert joins[k].run_id == steps["join"]["job_run_id"]
            # Every parent's output, as that parent's one job run answered it.
            assert join_input["parent_outputs"] == {
                f"leaf_{i}": {"round": k, "i": i, "run": steps[f"leaf_{i}"]["job_run_id"]} for i in range(PARALLEL)}
            # The transactions (moves) that recorded the leaves' ends: events of a move share its start time.
            moves_counting_the_join.append(await conn.fetchval(
                "SELECT count(DISTINCT create_time) FROM workflow_run_events WHERE workflow_run_id = $1"
                " AND type = 'step_status' AND to_status = 'completed' AND step_ref LIKE 'leaf%'", run.id))
    finally:
        await conn.close()
    # The race did happen: the parents' ends reached the join through several moves (transactions, which
    # serialise on the run's lock), not all in one.
    assert sum(moves_counting_the_join) > ROUNDS, moves_counting_the_join
