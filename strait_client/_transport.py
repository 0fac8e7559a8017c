"""How a call is carried out: one transport per client flavour, both executing the same `_ops.Op`s (retrying
them as the RetryPolicy says) and paging through list calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from strait_client._errors import from_rpc_error
from strait_client._ops import Op, Page
from strait_client._retry import Attempts, RetryPolicy
from strait_client.v1 import (
    circuit_pb2_grpc,
    event_pb2_grpc,
    job_pb2_grpc,
    project_pb2_grpc,
    run_pb2_grpc,
    schedule_pb2_grpc,
    workflow_pb2_grpc,
    workflow_run_pb2_grpc,
)

T = TypeVar("T")


def auth_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying `api_key`; ValueError when it is empty."""
    if not api_key:
        raise ValueError("an API key is required (pass api_key or set STRAIT_API_KEY)")
    return (("authorization", f"Bearer {api_key}"),)


def _stubs(channel: Any) -> dict[str, Any]:
    return {
        "jobs": job_pb2_grpc.JobServiceStub(channel),
        "runs": run_pb2_grpc.RunServiceStub(channel),
        "projects": project_pb2_grpc.ProjectServiceStub(channel),
        "schedules": schedule_pb2_grpc.ScheduleServiceStub(channel),
        "circuits": circuit_pb2_grpc.EndpointCircuitServiceStub(channel),
        "workflows": workflow_pb2_grpc.WorkflowServiceStub(channel),
        "workflow_runs": workflow_run_pb2_grpc.WorkflowRunServiceStub(channel),
        "events": event_pb2_grpc.EventServiceStub(channel),
    }


class Transport:
    """Blocking calls on a grpc.Channel."""

    def __init__(self, channel: grpc.Channel, api_key: str, timeout: float, retry: RetryPolicy) -> None:
        self.channel = channel
        self.metadata = auth_metadata(api_key)
        self.timeout = timeout
        self.retry = retry
        self._stubs = _stubs(channel)

    def call(self, op: Op[T]) -> T:
        method = getattr(self._stubs[op.service], op.method)
        attempts = Attempts(self.retry, self.timeout, op.retryable)
        while True:
            try:
                return op.convert(method(op.request, metadata=self.metadata, timeout=attempts.timeout()))
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if (wait := attempts.wait_after(error)) is None:
                    raise error from err
            time.sleep(wait)

    def stub(self, service: str) -> Any:
        return self._stubs[service]

    def pages(self, make: Callable[[str], Op[Page[T]]]) -> Iterator[T]:
        token = ""
        while True:
            items, token = self.call(make(token))
            yield from items
            if not token:
                return


class AsyncTransport:
    """Awaited calls on a grpc.aio.Channel."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str, timeout: float, retry: RetryPolicy) -> None:
        self.channel = channel
        self.metadata = auth_metadata(api_key)
        self.timeout = timeout
        self.retry = retry
        self._stubs = _stubs(channel)

    async def call(self, op: Op[T]) -> T:
        method = getattr(self._stubs[op.service], op.method)
        attempts = Attempts(self.retry, self.timeout, op.retryable)
        while True:
            try:
                return op.convert(await method(op.request, metadata=self.metadata, timeout=attempts.timeout()))
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if (wait := attempts.wait_after(error)) is None:
                    raise error from err
            await asyncio.sleep(wait)

    def stub(self, service: str) -> Any:
        return self._stubs[service]

    async def pages(self, make: Callable[[str], Op[Page[T]]]) -> AsyncIterator[T]:
        token = ""
        while True:
            items, token = await self.call(make(token))
            for item in items:
                yield item
            if not token:
                return
