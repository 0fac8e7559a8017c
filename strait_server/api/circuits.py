"""EndpointCircuitService: the circuit breakers of the project's job endpoints."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from strait_client.v1 import circuit_pb2, circuit_pb2_grpc
from strait_server.api import convert, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations
from strait_server.store.circuits import Circuit, CircuitStore

_STATES = {"closed": circuit_pb2.CIRCUIT_STATE_CLOSED, "open": circuit_pb2.CIRCUIT_STATE_OPEN,
           "half_open": circuit_pb2.CIRCUIT_STATE_HALF_OPEN}
# Page tokens carry a time and an id; circuits are paged by URL alone.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _circuit(c: Circuit) -> circuit_pb2.EndpointCircuit:
    return circuit_pb2.EndpointCircuit(
        endpoint_url=c.endpoint_url, state=_STATES[c.state], consecutive_failures=c.consecutive_failures,
        open_until=convert.ts(c.open_until) if c.state == "open" else None, update_time=convert.ts(c.update_time),
        last_error=c.last_error)


class EndpointCircuitServicer(circuit_pb2_grpc.EndpointCircuitServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._store: CircuitStore = deps.circuits

    async def ListEndpointCircuits(self, request: circuit_pb2.ListEndpointCircuitsRequest,
                                   context: grpc.aio.ServicerContext) -> circuit_pb2.ListEndpointCircuitsResponse:
        project = project_id()
        size = page_size(request.page_size)
        fp = fingerprint("circuits", project)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        items = await self._store.list(project, cursor[1] if cursor else "", size + 1)
        token = ""
        if len(items) > size:
            items = items[:size]
            token = self._d.page_tokens.encode(_EPOCH, items[-1].endpoint_url, fp)
        return circuit_pb2.ListEndpointCircuitsResponse(circuits=[_circuit(c) for c in items],
                                                        next_page_token=token)

    async def ResetEndpointCircuit(self, request: circuit_pb2.ResetEndpointCircuitRequest,
                                   context: grpc.aio.ServicerContext) -> circuit_pb2.ResetEndpointCircuitResponse:
        project = project_id()
        v = Violations()
        validate.check_text(v, "endpoint_url", request.endpoint_url, max_len=2048, required=True)
        v.raise_if_any()
        await self._store.succeeded(project, request.endpoint_url)
        self._d.on_enqueued()
        return circuit_pb2.ResetEndpointCircuitResponse(circuit=circuit_pb2.EndpointCircuit(
            endpoint_url=request.endpoint_url, state=circuit_pb2.CIRCUIT_STATE_CLOSED,
            update_time=convert.ts(datetime.now(UTC))))
