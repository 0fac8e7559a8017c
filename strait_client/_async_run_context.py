"""AsyncRunContext: RunContext for asyncio code running inside a run (see _run_context)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import grpc

from strait_client._config import DEFAULT_ADDRESS, Timeout, env_credentials, seconds
from strait_client._dispatch_info import DispatchInfo
from strait_client._errors import from_rpc_error
from strait_client._run_context import chunk_requests, log_request, optional_json, token_metadata
from strait_client.v1 import run_context_pb2 as pb
from strait_client.v1 import run_context_pb2_grpc


class AsyncRunContext:
    """Reports from inside a run (asyncio): the methods of RunContext, awaited. Use as
    `async with AsyncRunContext.from_headers(request.headers) as ctx`.

    Args:
        info: The dispatch's run, attempt and token.
        address: The server's HOST:PORT; default STRAIT_ADDRESS, else 127.0.0.1:50051.
        timeout: Each call's deadline: seconds or a timedelta.
        credentials: TLS credentials; None: TLS as the STRAIT_TLS* variables say (see TlsConfig.from_env), else
            plaintext.
        channel: A channel to use instead of opening one (not closed by `close`).
    """

    def __init__(self, info: DispatchInfo, address: str | None = None, *, timeout: Timeout = 10.0,
                 credentials: grpc.ChannelCredentials | None = None, channel: grpc.aio.Channel | None = None) -> None:
        self.info = info
        target = address or os.environ.get("STRAIT_ADDRESS") or DEFAULT_ADDRESS
        # A channel of the caller's (a worker's) is shared, not closed here.
        self._owns_channel = channel is None
        if channel is None:
            credentials, options = env_credentials(credentials)
            channel = (grpc.aio.secure_channel(target, credentials, options=options) if credentials
                       else grpc.aio.insecure_channel(target))
        self._channel = channel
        self._stub = run_context_pb2_grpc.RunContextServiceStub(self._channel)
        self._metadata = token_metadata(info.token)
        self._timeout = seconds(timeout)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], address: str | None = None, **kwargs: Any) -> Self:
        """From the dispatch request's headers (aiohttp's request.headers, a dict, ...).

        Args:
            headers: The dispatch request's headers.
            address: The server's HOST:PORT; default STRAIT_ADDRESS, else 127.0.0.1:50051.
            **kwargs: `timeout` and `credentials`, as the constructor's.

        Returns:
            The context.

        Raises:
            ValueError: The headers are not those of a Strait dispatch, or the STRAIT_TLS* variables are
                malformed or name a file that cannot be used.
        """
        return cls(DispatchInfo.from_headers(headers), address, **kwargs)

    @classmethod
    def from_asgi_scope(cls, scope: Mapping[str, Any], address: str | None = None, **kwargs: Any) -> Self:
        """From an ASGI handler's scope, whose headers are byte pairs.

        Args:
            scope: The ASGI scope of the dispatch request.
            address: The server's HOST:PORT; default STRAIT_ADDRESS, else 127.0.0.1:50051.
            **kwargs: `timeout` and `credentials`, as the constructor's.

        Returns:
            The context.

        Raises:
            ValueError: The scope is not that of a Strait dispatch.
        """
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
        """Appends a log line to the run's events.

        Args:
            message: The line.
            level: debug, info, warn or error.
            data: A JSON object kept with the line.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
            InvalidArgumentError: The value is too large or not valid.
        """
        return int((await self._call("Log", log_request(message, level, data))).sequence)

    async def progress(self, percent: float, message: str = "", step: str = "") -> int:
        """Reports progress.

        Args:
            percent: 0 to 100.
            message: What is happening.
            step: A name for the current step.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
        """
        resp = await self._call("Progress", pb.ProgressRequest(percent=percent, message=message, step=step))
        return int(resp.sequence)

    async def heartbeat(self) -> bool:
        """Extends the attempt's deadline by the run's timeout; later calls use the renewed run token.

        Returns:
            True when the run was canceled and the work should stop.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
        """
        resp = await self._call("Heartbeat", pb.HeartbeatRequest())
        if resp.run_token:  # later calls use the renewed token
            self._metadata = token_metadata(resp.run_token)
        return bool(resp.canceled)

    async def checkpoint(self, state: Any) -> int:
        """Saves state handed to the next attempt (its `last_checkpoint`).

        Args:
            state: JSON-encodable, at most 4 KiB encoded.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
            InvalidArgumentError: The value is too large or not valid.
        """
        return int((await self._call("Checkpoint", pb.CheckpointRequest(state_json=json.dumps(state)))).sequence)

    async def set_output(self, output: Any) -> int:
        """Sets the run's output without finishing the run.

        Args:
            output: JSON-encodable, at most 1 MiB encoded.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
            InvalidArgumentError: The value is too large or not valid.
        """
        return int((await self._call("SetOutput", pb.SetOutputRequest(output_json=json.dumps(output)))).sequence)

    async def report_cost(self, cost_microusd: int) -> bool:
        """Adds to the run's cost and its project's monthly spend.

        Args:
            cost_microusd: Micro-USD to add (1 USD = 1,000,000).

        Returns:
            True when the project's monthly budget is now spent.

        Raises:
            ResourceExhaustedError: The run's cost would pass the job's max_run_cost_microusd.
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
        """
        resp = await self._call("ReportCost", pb.ReportCostRequest(cost_microusd=cost_microusd))
        return bool(resp.budget_exhausted)

    async def complete(self, output: Any | None = None) -> None:
        """Completes the run (for endpoints that answered 202 Accepted, or to finish before answering).

        Args:
            output: The run's output; None keeps any output set before.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
        """
        await self._call("Complete", pb.CompleteRequest(output_json=optional_json(output)))

    async def fail(self, error: str) -> None:
        """Fails the run at once, without retries.

        Args:
            error: The run's error.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
        """
        await self._call("Fail", pb.FailRequest(error=error))

    async def stream_output(self, chunks: Iterable[bytes] | AsyncIterator[bytes], stream_id: str = "") -> int:
        """Streams output chunks, each of which becomes an "output_chunk" event, then a final `done` one.

        Args:
            chunks: The chunks, sent as the iterable (or async iterator) yields them.
            stream_id: Names one of several output streams; empty means "default".

        Returns:
            How many chunk events were written (the final `done` one included).

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            UnauthenticatedError: The run token is invalid or expired.
            InvalidArgumentError: The value is too large or not valid.
        """
        async def requests() -> AsyncIterator[pb.StreamOutputRequest]:
            if isinstance(chunks, AsyncIterator):
                async for chunk in chunks:
                    yield pb.StreamOutputRequest(stream_id=stream_id, chunk=chunk)
                yield pb.StreamOutputRequest(stream_id=stream_id, done=True)
            else:
                for request in chunk_requests(chunks, stream_id):
                    yield request

        try:
            resp = await self._stub.StreamOutput(requests(), metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return int(resp.chunks)

    async def close(self) -> None:
        """Closes the channel (unless it was given: a worker's is shared)."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
