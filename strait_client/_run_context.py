"""RunContext (blocking) and AsyncRunContext: for code running inside a run, built from the headers of the
dispatch request. Every call is authorised by the run token that came with the dispatch, for that run and
attempt only, and writes an event that watchers see live."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import grpc

from strait_client._config import DEFAULT_ADDRESS, Timeout, seconds
from strait_client._dispatch_info import DispatchInfo
from strait_client._errors import from_rpc_error
from strait_client.v1 import run_context_pb2 as pb
from strait_client.v1 import run_context_pb2_grpc

__all__ = ["AsyncRunContext", "DispatchInfo", "RunContext"]


def _dumps(value: Any) -> str:
    return "" if value is None else json.dumps(value)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _log(message: str, level: str, data: Mapping[str, Any] | None) -> pb.LogRequest:
    return pb.LogRequest(level=level, message=message, data_json=_dumps(data))


def _chunks(chunks: Iterable[bytes], stream_id: str) -> Iterator[pb.StreamOutputRequest]:
    for chunk in chunks:
        yield pb.StreamOutputRequest(stream_id=stream_id, chunk=chunk)
    yield pb.StreamOutputRequest(stream_id=stream_id, done=True)


class RunContext:
    """Reports from inside a run (blocking). Use as `with RunContext.from_headers(request.headers) as ctx`.

    Every method raises FailedPreconditionError once the attempt has ended (finished, timed out, canceled),
    UnauthenticatedError/PermissionDeniedError for a bad or foreign token, and other StraitError subclasses
    as the server answers.

    Args:
        info: The dispatch's run, attempt and token.
        address: The server's HOST:PORT; default STRAIT_ADDRESS, else 127.0.0.1:50051.
        timeout: Each call's deadline: seconds or a timedelta.
        credentials: TLS credentials; None: plaintext.
    """

    def __init__(self, info: DispatchInfo, address: str | None = None, *, timeout: Timeout = 10.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.info = info
        target = address or os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS
        self._channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
        self._stub = run_context_pb2_grpc.RunContextServiceStub(self._channel)
        self._metadata = _auth(info.token)
        self._timeout = seconds(timeout)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], address: str | None = None, **kwargs: Any) -> Self:
        """From the dispatch request's headers; `address` and `kwargs` as the constructor's.

        Raises:
            ValueError: The headers are not those of a Strait dispatch.
        """
        return cls(DispatchInfo.from_headers(headers), address, **kwargs)

    @property
    def run_id(self) -> str:
        """The run this context reports for."""
        return self.info.run_id

    @property
    def last_checkpoint(self) -> Any | None:
        """The state the previous attempt saved with checkpoint(), if any."""
        return self.info.last_checkpoint

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def log(self, message: str, level: str = "info", data: Mapping[str, Any] | None = None) -> int:
        """Appends a log line to the run's events.

        Args:
            message: The line.
            level: debug, info, warn or error.
            data: A JSON object kept with the line.

        Returns:
            The event's sequence number.
        """
        return int(self._call("Log", _log(message, level, data)).sequence)

    def progress(self, percent: float, message: str = "", step: str = "") -> int:
        """Reports progress.

        Args:
            percent: 0 to 100.
            message: What is happening.
            step: A name for the current step.

        Returns:
            The event's sequence number.
        """
        return int(self._call("Progress", pb.ProgressRequest(percent=percent, message=message, step=step)).sequence)

    def heartbeat(self) -> bool:
        """Extends the attempt's deadline by the run's timeout; later calls use the renewed run token.

        Returns:
            True when the run was canceled and the work should stop.
        """
        resp = self._call("Heartbeat", pb.HeartbeatRequest())
        if resp.run_token:
            self._metadata = _auth(resp.run_token)
        return bool(resp.canceled)

    def checkpoint(self, state: Any) -> int:
        """Saves state handed to the next attempt (its `last_checkpoint`).

        Args:
            state: JSON-encodable, at most 4 KiB encoded.

        Returns:
            The event's sequence number.
        """
        return int(self._call("Checkpoint", pb.CheckpointRequest(state_json=json.dumps(state))).sequence)

    def set_output(self, output: Any) -> int:
        """Sets the run's output without finishing the run.

        Args:
            output: JSON-encodable, at most 1 MiB encoded.

        Returns:
            The event's sequence number.
        """
        return int(self._call("SetOutput", pb.SetOutputRequest(output_json=json.dumps(output))).sequence)

    def report_cost(self, cost_microusd: int) -> bool:
        """Adds to the run's cost and its project's monthly spend.

        Args:
            cost_microusd: Micro-USD to add (1 USD = 1,000,000).

        Returns:
            True when the project's monthly budget is now spent.

        Raises:
            ResourceExhaustedError: The run's cost would pass the job's max_run_cost_microusd.
        """
        return bool(self._call("ReportCost", pb.ReportCostRequest(cost_microusd=cost_microusd)).budget_exhausted)

    def stream_output(self, chunks: Iterable[bytes], stream_id: str = "") -> int:
        """Streams output chunks, each of which becomes an "output_chunk" event, then a final `done` one.

        Args:
            chunks: The chunks, sent as the iterable yields them.
            stream_id: Names one of several output streams; empty means "default".

        Returns:
            How many chunk events were written (the final `done` one included).
        """
        try:
            resp = self._stub.StreamOutput(_chunks(chunks, stream_id), metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return int(resp.chunks)

    def complete(self, output: Any | None = None) -> None:
        """Completes the run (for endpoints that answered 202 Accepted, or to finish before answering).

        Args:
            output: The run's output; None keeps any output set before.
        """
        self._call("Complete", pb.CompleteRequest(output_json=_dumps(output)))

    def fail(self, error: str) -> None:
        """Fails the run at once, without retries.

        Args:
            error: The run's error.
        """
        self._call("Fail", pb.FailRequest(error=error))

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncRunContext:
    """Reports from inside a run (asyncio): the methods of RunContext, awaited. Use as
    `async with AsyncRunContext.from_headers(request.headers) as ctx`. Args and errors as RunContext's."""

    def __init__(self, info: DispatchInfo, address: str | None = None, *, timeout: Timeout = 10.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.info = info
        target = address or os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS
        self._channel = (grpc.aio.secure_channel(target, credentials) if credentials
                         else grpc.aio.insecure_channel(target))
        self._stub = run_context_pb2_grpc.RunContextServiceStub(self._channel)
        self._metadata = _auth(info.token)
        self._timeout = seconds(timeout)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], address: str | None = None, **kwargs: Any) -> Self:
        """From the dispatch request's headers (aiohttp's request.headers, a dict, ...). Raises as
        RunContext.from_headers."""
        return cls(DispatchInfo.from_headers(headers), address, **kwargs)

    @classmethod
    def from_asgi_scope(cls, scope: Mapping[str, Any], address: str | None = None, **kwargs: Any) -> Self:
        """From an ASGI handler's scope. Raises ValueError when it is not a Strait dispatch."""
        return cls(DispatchInfo.from_asgi_scope(scope), address, **kwargs)

    @property
    def run_id(self) -> str:
        """The run this context reports for."""
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
        """Appends a log line to the run's events. Args and Returns as RunContext.log."""
        return int((await self._call("Log", _log(message, level, data))).sequence)

    async def progress(self, percent: float, message: str = "", step: str = "") -> int:
        """Reports progress. Args and Returns as RunContext.progress."""
        resp = await self._call("Progress", pb.ProgressRequest(percent=percent, message=message, step=step))
        return int(resp.sequence)

    async def heartbeat(self) -> bool:
        """Extends the attempt's deadline; True when the run was canceled. As RunContext.heartbeat."""
        resp = await self._call("Heartbeat", pb.HeartbeatRequest())
        if resp.run_token:  # later calls use the renewed token
            self._metadata = _auth(resp.run_token)
        return bool(resp.canceled)

    async def checkpoint(self, state: Any) -> int:
        """Saves state handed to the next attempt. Args and Returns as RunContext.checkpoint."""
        return int((await self._call("Checkpoint", pb.CheckpointRequest(state_json=json.dumps(state)))).sequence)

    async def set_output(self, output: Any) -> int:
        """Sets the run's output without finishing it. Args and Returns as RunContext.set_output."""
        return int((await self._call("SetOutput", pb.SetOutputRequest(output_json=json.dumps(output)))).sequence)

    async def report_cost(self, cost_microusd: int) -> bool:
        """Adds to the run's cost; True when the budget is now spent. As RunContext.report_cost."""
        resp = await self._call("ReportCost", pb.ReportCostRequest(cost_microusd=cost_microusd))
        return bool(resp.budget_exhausted)

    async def complete(self, output: Any | None = None) -> None:
        """Completes the run. Args as RunContext.complete."""
        await self._call("Complete", pb.CompleteRequest(output_json=_dumps(output)))

    async def fail(self, error: str) -> None:
        """Fails the run at once, without retries. Args as RunContext.fail."""
        await self._call("Fail", pb.FailRequest(error=error))

    async def stream_output(self, chunks: Iterable[bytes] | AsyncIterator[bytes], stream_id: str = "") -> int:
        """Streams output chunks from an iterable or an async iterator. Args and Returns as
        RunContext.stream_output."""
        async def requests() -> AsyncIterator[pb.StreamOutputRequest]:
            if isinstance(chunks, AsyncIterator):
                async for chunk in chunks:
                    yield pb.StreamOutputRequest(stream_id=stream_id, chunk=chunk)
                yield pb.StreamOutputRequest(stream_id=stream_id, done=True)
            else:
                for request in _chunks(chunks, stream_id):
                    yield request

        try:
            resp = await self._stub.StreamOutput(requests(), metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return int(resp.chunks)

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
