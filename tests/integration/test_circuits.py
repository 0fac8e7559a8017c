"""Endpoint circuit breakers: open after consecutive failures, runs wait without using attempts, one probe."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import grpc
import pytest

from strait_client.v1 import circuit_pb2, circuit_pb2_grpc, run_pb2
from strait_server.config import Settings
from tests.conftest import Api, AppFactory, connect, eventually
from tests.sink import Reply, Sink
from tests.support import FAST_RETRY

S = run_pb2
NOT_ATTEMPTED = "endpoint circuit open: not attempted"


def _circuits(api: Api) -> circuit_pb2_grpc.EndpointCircuitServiceStub:
    return circuit_pb2_grpc.EndpointCircuitServiceStub(api.channel)


async def _list(api: Api) -> list[circuit_pb2.EndpointCircuit]:
    resp = await _circuits(api).ListEndpointCircuits(circuit_pb2.ListEndpointCircuitsRequest(),
                                                      metadata=api.metadata)
    return list(resp.circuits)


async def test_failures_open_the_circuit_and_waiting_runs_keep_their_attempts(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=3, circuit_open_for=timedelta(seconds=1))
    api = await connect(app, settings.admin_key)
    url = sink.script("/flaky", Reply(500), Reply(503), Reply(500), then=Reply(200))
    job = await api.create_job("flaky", url, max_attempts=10, retry_policy=FAST_RETRY)
    run = await api.trigger(job)

    async def opened() -> circuit_pb2.EndpointCircuit | None:
        circuits = await _list(api)
        return circuits[0] if circuits and circuits[0].state == circuit_pb2.CIRCUIT_STATE_OPEN else None
    circuit = await eventually(opened)
    assert circuit.endpoint_url == url and circuit.consecutive_failures == 3
    assert circuit.last_error == "endpoint returned 500" and circuit.HasField("open_until")

    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    # Three failures, then the probe that succeeded: the waits in between used no attempt.
    assert done.attempt == 4 and len(sink.for_path("/flaky")) == 4
    assert [a.status_code for a in done.attempts] == [500, 503, 500, 200]
    events = await api.events(run.id)
    notes = [e.message for e in events if e.type == "circuit"]
    assert notes[0].startswith("endpoint circuit opened after 3 consecutive failures")
    assert notes[-1] == f"endpoint circuit closed: {url} answered"
    assert any(e.message.startswith(NOT_ATTEMPTED) and e.to_status == S.RUN_STATUS_QUEUED for e in events)
    assert await _list(api) == []
    await api.channel.close()


async def test_half_open_sends_one_probe_while_the_others_wait(make_app: AppFactory, settings: Settings,
                                                               sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=2, circuit_open_for=timedelta(milliseconds=500))
    api = await connect(app, settings.admin_key)
    probe = asyncio.Event()
    url = sink.script("/down", Reply(500), Reply(500), Reply(block=probe), then=Reply(200))
    job = await api.create_job("down", url, max_attempts=10, retry_policy=FAST_RETRY)
    first = await api.trigger(job)
    await eventually(lambda: _opened(api))
    others = [await api.trigger(job) for _ in range(4)]
    probe_request = (await sink.wait_for(3, "/down"))[2]

    waiting = [r for r in [first, *others] if r.id != probe_request.run_id]
    assert len(waiting) == 4

    async def all_waited_after_the_probe_began() -> bool:
        for r in waiting:
            events = await api.events(r.id)
            if not any(e.message.startswith(NOT_ATTEMPTED)
                       and e.create_time.ToDatetime(tzinfo=UTC).timestamp() > probe_request.wall for e in events):
                return False
        return True
    await eventually(all_waited_after_the_probe_began, interval=0.1)
    assert len(sink.for_path("/down")) == 3  # only the probe reached the endpoint
    probe.set()
    for r in [first, *others]:
        await api.wait_status(r.id, S.RUN_STATUS_COMPLETED)
    assert len(sink.for_path("/down")) == 7
    await api.channel.close()


async def _opened(api: Api) -> bool:
    return any(c.state == circuit_pb2.CIRCUIT_STATE_OPEN for c in await _list(api))


async def test_reset_closes_the_circuit_and_releases_waiting_runs(make_app: AppFactory, settings: Settings,
                                                                 sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=1, circuit_open_for=timedelta(hours=1))
    api = await connect(app, settings.admin_key)
    url = sink.script("/fixed", Reply(500), then=Reply(200))
    job = await api.create_job("fixed", url, max_attempts=5, retry_policy=FAST_RETRY)
    run = await api.trigger(job)

    async def waiting() -> bool:
        got = await api.get_run(run.id)
        return got.status == S.RUN_STATUS_QUEUED and got.error.startswith(NOT_ATTEMPTED)
    await eventually(waiting)
    resp = await _circuits(api).ResetEndpointCircuit(circuit_pb2.ResetEndpointCircuitRequest(endpoint_url=url),
                                                     metadata=api.metadata)
    assert resp.circuit.state == circuit_pb2.CIRCUIT_STATE_CLOSED
    done = await api.wait_status(run.id, S.RUN_STATUS_COMPLETED)
    assert done.attempt == 2
    await api.channel.close()


async def test_client_errors_do_not_count_and_other_projects_do_not_see_circuits(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(circuit_failure_threshold=1)
    api = await connect(app, settings.admin_key)
    job = await api.create_job("bad-request", sink.script("/bad", then=Reply(400)))
    run = await api.trigger(job)
    await api.wait_status(run.id, S.RUN_STATUS_DEAD_LETTER)
    assert await _list(api) == []
    failing = await api.create_job("failing", sink.script("/fail", then=Reply(500)), max_attempts=1)
    await api.wait_status((await api.trigger(failing)).id, S.RUN_STATUS_DEAD_LETTER)
    assert [c.endpoint_url for c in await _list(api)] == [sink.url("/fail")]
    other = await connect(app, settings.admin_key)
    assert await _list(other) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _circuits(api).ResetEndpointCircuit(circuit_pb2.ResetEndpointCircuitRequest(), metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await api.channel.close()
    await other.channel.close()


@pytest.mark.parametrize("url", ["a\x00b", "x" * 2049])
async def test_a_bad_endpoint_url_to_reset_names_the_field(api: Api, url: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _circuits(api).ResetEndpointCircuit(circuit_pb2.ResetEndpointCircuitRequest(endpoint_url=url),
                                                  metadata=api.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "endpoint_url" in err.value.details()
