"""The console's calls: the gRPC API of its own server process, over one shared channel, each call with the
signed-in key's metadata. The console thus can do exactly what the key can do over gRPC (same authorization,
project scoping, rate limits and audit), and a failed call raises the client's typed StraitError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from strait_client._errors import from_rpc_error
from strait_client.v1 import (
    circuit_pb2_grpc,
    job_pb2_grpc,
    project_pb2_grpc,
    run_pb2_grpc,
    schedule_pb2_grpc,
    worker_pb2_grpc,
    workflow_pb2_grpc,
    workflow_run_pb2_grpc,
)
from strait_server.api.limits import CONSOLE_CLIENT_HEADER

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0
# A followed watch whose call lasted less than this waits as long before the next call.
MIN_STREAM_S = 1.0


@dataclass(frozen=True)
class Caller:
    """Who a call is made for: the signed-in key, and the browser's address (the API counts failed sign-ins
    towards a lockout per browser, not per console)."""

    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, api_key: str, remote: str | None) -> Caller:
        metadata = [("authorization", f"Bearer {api_key}")]
        if remote:
            metadata.append((CONSOLE_CLIENT_HEADER, remote))
        return cls(tuple(metadata))


class ConsoleApi:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.runs = run_pb2_grpc.RunServiceStub(channel)
        self.jobs = job_pb2_grpc.JobServiceStub(channel)
        self.projects = project_pb2_grpc.ProjectServiceStub(channel)
        self.schedules = schedule_pb2_grpc.ScheduleServiceStub(channel)
        self.circuits = circuit_pb2_grpc.EndpointCircuitServiceStub(channel)
        self.workflows = workflow_pb2_grpc.WorkflowServiceStub(channel)
        self.workflow_runs = workflow_run_pb2_grpc.WorkflowRunServiceStub(channel)
        self.workers = worker_pb2_grpc.WorkerServiceStub(channel)

    async def call(self, caller: Caller, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """One unary call for `caller`; StraitError when it fails."""
        try:
            return await method(request, metadata=caller.metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def stream(self, caller: Caller, method: Callable[..., Any], request: Any,
                     opened: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[Any]:
        """A server-streaming call for `caller`, until it ends or the iteration stops. `opened` runs once the
        server has answered the call's headers (a feed has then taken its position), before any message."""
        call = method(request, metadata=caller.metadata)
        try:
            if opened is not None:
                await call.initial_metadata()
                await opened()
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error(err) from None
        finally:
            call.cancel()

    async def followed(self, caller: Caller, method: Callable[..., Any], request_for: Callable[[], Any],
                       opened: Callable[[], Awaitable[None]] | None = None,
                       goes_on: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[Any]:
        """A watch followed past the API's maximum stream duration (STRAIT_WATCH_MAX_DURATION), so that a page
        left open keeps up: when a call ends by itself and `goes_on()` (None: always) says there is more to
        follow, another call continues where it stopped. `request_for()` makes each call's request from what
        the caller kept of the messages it was given (a resume token, a sequence); `opened` runs for the first."""
        loop = asyncio.get_running_loop()
        first = True
        while True:
            started = loop.time()
            async for message in self.stream(caller, method, request_for(), opened=opened if first else None):
                yield message
            first = False
            if goes_on is not None and not await goes_on():
                return
            if loop.time() - started < MIN_STREAM_S:
                await asyncio.sleep(MIN_STREAM_S)  # a server ending streams at once is not called in a loop
