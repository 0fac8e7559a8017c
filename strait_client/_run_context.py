"""RunContext: for code running inside a run, built from the headers of the dispatch request."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc

from strait_client._config import Timeout, seconds
from strait_client._errors import from_rpc_error
from strait_client.v1 import run_context_pb2 as pb
from strait_client.v1 import run_context_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass(frozen=True)
class DispatchInfo:
    run_id: str
    job_id: str
    attempt: int
    token: str
    last_checkpoint: Any | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> DispatchInfo:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            run_id, token = lower["x-run-id"], lower["x-run-token"]
        except KeyError as missing:
            raise ValueError(f"not a Strait dispatch: header {missing} is missing") from None
        checkpoint = lower.get("x-last-checkpoint")
        return cls(run_id=run_id, job_id=lower.get("x-job-id", ""), attempt=int(lower.get("x-attempt", "1")),
                   token=token, last_checkpoint=json.loads(checkpoint) if checkpoint else None)

    @classmethod
    def from_asgi_scope(cls, scope: Mapping[str, Any]) -> DispatchInfo:
        """From an ASGI HTTP scope (Starlette, FastAPI, Django ASGI...), whose headers are byte pairs."""
        return cls.from_headers({k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())})


def _dumps(value: Any) -> str:
    return "" if value is None else json.dumps(value)


class AsyncRunContext:
    """Reports from inside a run (asyncio). Use as `async with AsyncRunContext.from_headers(request.headers)`.

    The address comes from `address` or STRAIT_ADDRESS. Every call is authorised by the run token that
    came with the dispatch, for that run and attempt only.
    """

    def __init__(self, info: DispatchInfo, address: str | None = None, *, timeout: Timeout = 10.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.info = info
        target = address or os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS
        self._channel = (grpc.aio.secure_channel(target, credentials) if credentials
                         else grpc.aio.insecure_channel(target))
        self._stub = run_context_pb2_grpc.RunContextServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {info.token}"),)
        self._timeout = seconds(timeout)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], address: str | None = None, **kwargs: Any) -> Self:
        """From the dispatch request's headers (aiohttp's request.headers, a dict, ...)."""
        return cls(DispatchInfo.from_headers(headers), address, **kwargs)

    @classmethod
    def from_asgi_scope(cls, scope: Mapping[str, Any], address: str | None = None, **kwargs: Any) -> Self:
        """From an ASGI handler's scope."""
        return cls(DispatchInfo.from_asgi_scope(scope), address, **kwargs)

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def last_checkpoint(self) -> Any | None:
        """The state the previous attempt saved with checkpoint(), if any."""
        return self.info.last_checkpoint

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    async def log(self, message: str, level: str = "info", data: Mapping[str, Any] | None = None) -> int:
        resp = await self._call("Log", pb.LogRequest(level=level, message=message, data_json=_dumps(data)))
        return int(resp.sequence)

    async def progress(self, percent: float, message: str = "", step: str = "") -> int:
        resp = await self._call("Progress", pb.ProgressRequest(percent=percent, message=message, step=step))
        return int(resp.sequence)

    async def heartbeat(self) -> bool:
        """Extends the attempt's deadline; True when the run was canceled and the work should stop."""
        resp = await self._call("Heartbeat", pb.HeartbeatRequest())
        if resp.run_token:  # later calls use the renewed token
            self._metadata = (("authorization", f"Bearer {resp.run_token}"),)
        return bool(resp.canceled)

    async def checkpoint(self, state: Any) -> int:
        return int((await self._call("Checkpoint", pb.CheckpointRequest(state_json=json.dumps(state)))).sequence)

    async def set_output(self, output: Any) -> int:
        return int((await self._call("SetOutput", pb.SetOutputRequest(output_json=json.dumps(output)))).sequence)

    async def report_cost(self, cost_microusd: int) -> bool:
        """Adds to the run's cost and its project's monthly spend; True when the budget is now spent."""
        resp = await self._call("ReportCost", pb.ReportCostRequest(cost_microusd=cost_microusd))
        return bool(resp.budget_exhausted)

    async def complete(self, output: Any | None = None) -> None:
        await self._call("Complete", pb.CompleteRequest(output_json=_dumps(output)))

    async def fail(self, error: str) -> None:
        await self._call("Fail", pb.FailRequest(error=error))

    async def stream_output(self, chunks: Iterable[bytes] | AsyncIterator[bytes], stream_id: str = "") -> int:
        async def requests() -> AsyncIterator[pb.StreamOutputRequest]:
            if isinstance(chunks, AsyncIterator):
                async for chunk in chunks:
                    yield pb.StreamOutputRequest(stream_id=stream_id, chunk=chunk)
            else:
                for chunk in chunks:
                    yield pb.StreamOutputRequest(stream_id=stream_id, chunk=chunk)
            yield pb.StreamOutputRequest(stream_id=stream_id, done=True)

        try:
            resp = await self._stub.StreamOutput(requests(), metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return int(resp.chunks)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class RunContext:
    """Reports from inside a run (blocking). Use as `with RunContext.from_headers(request.headers)`."""

    def __init__(self, info: DispatchInfo, address: str | None = None, *, timeout: Timeout = 10.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.info = info
        target = address or os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS
        self._channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        self._stub = run_context_pb2_grpc.RunContextServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {info.token}"),)
        self._timeout = seconds(timeout)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], address: str | None = None, **kwargs: Any) -> Self:
        return cls(DispatchInfo.from_headers(headers), address, **kwargs)

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def last_checkpoint(self) -> Any | None:
        return self.info.last_checkpoint

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def log(self, message: str, level: str = "info", data: Mapping[str, Any] | None = None) -> int:
        return int(self._call("Log", pb.LogRequest(level=level, message=message, data_json=_dumps(data))).sequence)

    def progress(self, percent: float, message: str = "", step: str = "") -> int:
        return int(self._call("Progress", pb.ProgressRequest(percent=percent, message=message, step=step)).sequence)

    def heartbeat(self) -> bool:
        """Extends the attempt's deadline; True when the run was canceled and the work should stop."""
        resp = self._call("Heartbeat", pb.HeartbeatRequest())
        if resp.run_token:  # later calls use the renewed token
            self._metadata = (("authorization", f"Bearer {resp.run_token}"),)
        return bool(resp.canceled)

    def checkpoint(self, state: Any) -> int:
        return int(self._call("Checkpoint", pb.CheckpointRequest(state_json=json.dumps(state))).sequence)

    def set_output(self, output: Any) -> int:
        return int(self._call("SetOutput", pb.SetOutputRequest(output_json=json.dumps(output))).sequence)

    def report_cost(self, cost_microusd: int) -> bool:
        """Adds to the run's cost and its project's monthly spend; True when the budget is now spent."""
        return bool(self._call("ReportCost", pb.ReportCostRequest(cost_microusd=cost_microusd)).budget_exhausted)

    def complete(self, output: Any | None = None) -> None:
        self._call("Complete", pb.CompleteRequest(output_json=_dumps(output)))

    def fail(self, error: str) -> None:
        self._call("Fail", pb.FailRequest(error=error))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
