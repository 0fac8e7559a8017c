"""Input that used to reach clients as INTERNAL, or to dead-letter a run that had succeeded."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from strait_client.v1 import job_pb2, run_pb2
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect
from tests.sink import Reply, Sink

S = run_pb2


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def test_a_nul_in_an_endpoint_host_is_invalid_not_internal(make_app: AppFactory, settings: Settings) -> None:
    app = await make_app(allow_private_endpoints=False)
    api = await connect(app, settings.admin_key)
    for url in ("http://exa\x00mple.com/", "http://example.com/a\r\nX-Injected: 1", "http://example.com/a b"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.create_job("nul", url)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, url
    await api.channel.close()


async def test_a_deep_payload_on_a_dedup_job_is_deduplicated_not_internal(api: Api, sink: Sink) -> None:
    job = await api.create_job("deep", sink.script("/deep"), dedup_window=Duration(seconds=60))
    payload = _nested(1000)
    first = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(payload_json=payload)), metadata=api.metadata)
    again = await api.jobs.TriggerJob(job_pb2.TriggerJobRequest(
        id=job.id, options=job_pb2.RunOptions(payload_json=payload)), metadata=api.metadata)
    assert again.run.id == first.run.id and again.deduplicated


@pytest.mark.parametrize(("body", "stored"), [
    (_nested(5000), json.dumps(_nested(5000))),  # deeper than we parse: kept as a string
    ('{"a": "\\u0000"}', '{"a": "\\u0000"}'),  # the escape is text like any other: stored as is
    ('{"a": "b\x00c"}', '{"a": "b\ufffdc"}'),  # a raw NUL cannot be stored at all: replaced
])
async def test_an_endpoint_answering_200_completes_its_run_whatever_the_body(api: Api, sink: Sink, body: str,
                                                                              stored: str) -> None:
    job = await api.create_job("odd", sink.script("/odd", then=Reply(200, body)))
    run = await api.trigger(job)
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED, S.RUN_STATUS_DEAD_LETTER)
    assert (done.status, done.attempt) == (S.RUN_STATUS_COMPLETED, 1)
    assert json.loads(done.output_json) == json.loads(stored)
    assert len(sink.for_path("/odd")) == 1


async def test_a_duration_with_out_of_range_nanos_is_invalid(api: Api, sink: Sink) -> None:
    for nanos in (1_000_000_000, 2_000_000_000):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.create_job("nanos", sink.url("/n"), timeout=Duration(seconds=1, nanos=nanos))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
