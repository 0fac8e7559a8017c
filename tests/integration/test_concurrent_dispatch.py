"""Several dispatchers on one queue: every run is dispatched exactly once."""

from __future__ import annotations

import json
from collections import Counter

from strait_client.v1 import job_pb2, run_pb2
from strait_server.app import Role
from strait_server.config import Settings
from tests.conftest import AppFactory, connect, eventually
from tests.sink import Sink

WORKER = frozenset({Role.WORKER})


async def test_two_dispatchers_never_dispatch_a_run_twice(make_app: AppFactory, settings: Settings,
                                                          sink: Sink) -> None:
    front = await make_app(frozenset({Role.API, Role.SCHEDULER}))
    api = await connect(front, settings.admin_key)
    job = await api.create_job("many", sink.script("/many"))
    # Both dispatchers start before the runs exist, and race for them from the first batch on.
    first = await make_app(WORKER, claim_batch_size=20)
    second = await make_app(WORKER, claim_batch_size=20)
    ids: list[str] = []
    for chunk in range(3):
        runs = [job_pb2.RunOptions(payload_json=json.dumps({"i": chunk * 500 + i})) for i in range(500)]
        resp = await api.jobs.BatchTriggerJob(job_pb2.BatchTriggerJobRequest(id=job.id, runs=runs),
                                              metadata=api.metadata)
        ids.extend(r.id for r in resp.runs)

    async def all_settled() -> bool:
        assert first.dispatcher is not None and second.dispatcher is not None
        return first.dispatcher.outcomes_settled + second.dispatcher.outcomes_settled == len(ids)

    await eventually(all_settled, timeout=60)
    deliveries = Counter(r.run_id for r in sink.for_path("/many"))
    assert set(deliveries) == set(ids)
    assert max(deliveries.values()) == 1
    assert first.dispatcher and second.dispatcher
    assert first.dispatcher.outcomes_settled > 0 and second.dispatcher.outcomes_settled > 0
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(
        job_id=job.id, statuses=[run_pb2.RUN_STATUS_COMPLETED], page_size=1000), metadata=api.metadata)
    assert len(listed.runs) == 1000 and listed.next_page_token
    await api.channel.close()
