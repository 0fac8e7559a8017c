from __future__ import annotations

from strait_client.v1 import run_pb2
from tests.conftest import Api
from tests.sink import Sink


async def test_triggered_run_is_dispatched_and_completes(api: Api, sink: Sink) -> None:
    job = await api.create_job("hello", sink.script("/hello"))
    run = await api.trigger(job, payload_json='{"n": 12345678901234567890}')
    # At idle a trigger in a dispatching process hands the run straight to its dispatcher.
    assert run.status in (run_pb2.RUN_STATUS_QUEUED, run_pb2.RUN_STATUS_EXECUTING)
    done = await api.wait_status(run.id, run_pb2.RUN_STATUS_COMPLETED)
    assert done.output_json == '{"ok": true}'
    [req] = sink.for_path("/hello")
    assert req.body == b'{"n": 12345678901234567890}'
    assert req.headers["X-Run-ID"] == run.id
    assert req.headers["X-Attempt"] == "1"
    events = await api.events(run.id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (0, run_pb2.RUN_STATUS_QUEUED),
        (run_pb2.RUN_STATUS_QUEUED, run_pb2.RUN_STATUS_EXECUTING),
        (run_pb2.RUN_STATUS_EXECUTING, run_pb2.RUN_STATUS_COMPLETED),
    ]
    assert [e.sequence for e in events] == [1, 2, 3]
