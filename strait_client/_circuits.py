"""`client.circuits`: the circuit breakers of the project's job endpoints, blocking (Circuits) and asyncio
(AsyncCircuits). See docs/flow-control.md#circuit-breakers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from strait_client import _ops
from strait_client._admin_models import EndpointCircuit
from strait_client._ops import DEFAULT_PAGE_SIZE
from strait_client._transport import AsyncTransport, Transport


class Circuits:
    """`client.circuits`: the project's endpoint circuit breakers (EndpointCircuitService)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[EndpointCircuit]:
        """The project's endpoints that have failed since their last success, with their circuit state.

        Args:
            page_size: Circuits per call (1..1000).

        Returns:
            An iterator of circuits, by endpoint URL; an endpoint whose last dispatch succeeded is not listed.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_circuits(page_size))

    def reset(self, endpoint_url: str) -> EndpointCircuit:
        """Closes an endpoint's circuit now (e.g. after fixing the endpoint): its waiting runs are dispatched
        again.

        Args:
            endpoint_url: The endpoint URL, as the circuit lists it.

        Returns:
            The circuit, closed.

        Raises:
            InvalidArgumentError: `endpoint_url` is empty or too long.
        """
        return self._t.call(_ops.reset_circuit(endpoint_url))


class AsyncCircuits:
    """`client.circuits` of AsyncClient: the methods of Circuits, awaited; `list` is an async iterator."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[EndpointCircuit]:
        """The project's endpoints that have failed since their last success, with their circuit state.

        Args:
            page_size: Circuits per call (1..1000).

        Returns:
            An async iterator of circuits, by endpoint URL; an endpoint whose last dispatch succeeded is not listed.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_circuits(page_size))

    async def reset(self, endpoint_url: str) -> EndpointCircuit:
        """Closes an endpoint's circuit now (e.g. after fixing the endpoint): its waiting runs are dispatched
        again.

        Args:
            endpoint_url: The endpoint URL, as the circuit lists it.

        Returns:
            The circuit, closed.

        Raises:
            InvalidArgumentError: `endpoint_url` is empty or too long.
        """
        return await self._t.call(_ops.reset_circuit(endpoint_url))
