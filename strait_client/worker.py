"""Workers: long-lived processes that run the runs of worker jobs (execution_mode WORKER), taking them over one
WorkerService.Connect stream instead of receiving HTTP POSTs.

    worker = Worker.from_env(slots=50)

    @worker.handler("resize-image")
    async def resize(ctx: TaskContext, payload: dict) -> dict:
        ...
        return {"width": 640}

    worker.run()  # until SIGTERM or SIGINT

An async handler runs as a task on the worker's event loop; a plain function runs in the worker's own thread
pool (as many threads as slots, never the loop's default executor). What a handler returns is the run's output
(any JSON value); an exception fails the attempt (retried by the job's retry policy), NonRetryableError fails
the run at once. The server never gives a worker more runs than its slots, and only runs of the jobs it has
handlers for. When the stream breaks, the server gives the worker's unreported runs to another worker at once
(without spending their attempts), so the worker cancels its handlers and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import signal
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from strait_client._async_run_context import AsyncRunContext
from strait_client._config import ClientConfig, env_settings, open_aio_channel
from strait_client._dispatch_info import DispatchInfo
from strait_client._errors import from_rpc_error
from strait_client._transport import auth_metadata
from strait_client.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger("strait_client.worker")
W = worker_pb2

# Results are sent in batches: at most this many, gathered for at most FLUSH_S.
RESULT_BATCH = 256
FLUSH_S = 0.001
# Streams that are refused for these reasons are not retried: the worker's setup is wrong.
FATAL = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED})

Handler = Callable[["TaskContext", Any], Any]


class NonRetryableError(Exception):
    """Raised by a handler: the run fails now, whatever attempts it has left."""


@dataclass
class TaskContext:
    """What a handler knows of the run it runs."""

    run_id: str
    assignment_id: str
    job_slug: str
    queue: str
    attempt: int
    max_attempts: int
    deadline: datetime | None
    # For RunContextService calls about this run (logs, progress, checkpoints).
    run_token: str
    last_checkpoint: Any
    # Set when the run is taken away (the stream broke, or the worker stops): the handler should stop.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    job_id: str = ""
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)
    _reporter: AsyncRunContext | None = field(default=None, repr=False)

    def _report(self) -> AsyncRunContext:
        """RunContextService for this run, over the worker's connection (made when first used)."""
        if self._reporter is None:
            info = DispatchInfo(self.run_id, self.job_id, self.attempt, self.run_token, self.last_checkpoint)
            self._reporter = AsyncRunContext(info, channel=self._channel)
        return self._reporter

    async def log(self, message: str, level: str = "info", data: Mapping[str, Any] | None = None) -> int:
        """Appends a log line to the run's events (from an async handler); returns its sequence."""
        return await self._report().log(message, level, data)

    async def progress(self, percent: float, message: str = "", step: str = "") -> int:
        """Reports progress (0 to 100) as a run event (from an async handler); returns its sequence."""
        return await self._report().progress(percent, message, step)

    async def checkpoint(self, state: Any) -> int:
        """Saves state handed to the run's next attempt, as its `last_checkpoint` (at most 4 KiB as JSON)."""
        return await self._report().checkpoint(state)


@dataclass(frozen=True)
class _Route:
    queue: str
    job_slug: str
    fn: Handler
    is_async: bool


class Worker:
    """A worker process's connection to Strait: its handlers, its slots, and the session that feeds them."""

    def __init__(self, address: str, api_key: str, *, slots: int = 100, name: str = "", worker_id: str = "",
                 drain_timeout: float = 30.0, config: ClientConfig | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        if not 1 <= slots <= 10_000:
            raise ValueError("slots must be between 1 and 10,000")
        self.address = address
        self.slots = slots
        self.name = name
        self.worker_id = worker_id
        self.drain_timeout = drain_timeout
        self._metadata = auth_metadata(api_key)
        self._config = config or ClientConfig()
        self._credentials = credentials
        self._routes: dict[str, _Route] = {}
        self._stop = asyncio.Event()
        self._pool: ThreadPoolExecutor | None = None
        self.session_id = ""  # the current session's, once welcomed
        self.connected = asyncio.Event()
        # Set when the server asked this worker to drain (DrainWorker, or the server shutting down): it is
        # assigned nothing more on this session. Cleared by the next session.
        self.draining = asyncio.Event()

    @classmethod
    def from_env(cls, **options: Any) -> Worker:
        """A worker for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY.

        Args:
            **options: The keyword arguments of Worker (slots, name, worker_id, config, credentials).

        Returns:
            The worker.
        """
        address, api_key = env_settings()
        return cls(address, api_key, **options)

    def handler(self, job_slug: str, *, queue: str = "default") -> Callable[[Handler], Handler]:
        """Registers the decorated function as the handler of the worker job `job_slug` (in `queue`).

        Args:
            job_slug: The job's slug.
            queue: The job's queue.

        Returns:
            A decorator that returns the function unchanged.
        """
        def register(fn: Handler) -> Handler:
            self._routes[job_slug] = _Route(queue, job_slug, fn, inspect.iscoroutinefunction(fn))
            return fn
        return register

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT, then stops as `stop` says."""
        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            await self.serve()
        asyncio.run(main())

    def stop(self) -> None:
        """Ends `serve` (call it from the worker's event loop): the worker takes no new runs, lets the running
        handlers finish (up to `drain_timeout` seconds), waits until their results are accepted, and closes
        the stream; handlers still running then are cancelled, and their runs go to other workers."""
        self._stop.set()

    async def serve(self) -> None:
        """Connects and runs handlers until `stop`; reconnects (with backoff) when the stream breaks. Raises
        the StraitError of a stream the server refuses for good (a bad handler, a bad key)."""
        if not self._routes:
            raise ValueError("the worker has no handlers")
        self._stop = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="strait-worker")
        failures = 0
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self._session()
                except grpc.aio.AioRpcError as err:
                    if err.code() in FATAL:
                        raise from_rpc_error(err) from err
                    log.warning("worker stream ended: %s %s", err.code().name, err.details())
                if self._stop.is_set():
                    break
                failures = 0 if time.monotonic() - started > 30 else failures + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(0.1 * 2 ** failures, 5.0))
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _session(self) -> None:
        channel = open_aio_channel(self.address, self._config, self._credentials, None)
        session = _Session(self, worker_pb2_grpc.WorkerServiceStub(channel).Connect(metadata=self._metadata),
                           channel)
        try:
            await session.run(self._stop)
        finally:
            self.connected.clear()
            await session.close()
            await channel.close()

    def _hello(self) -> W.Hello:
        return W.Hello(worker_id=self.worker_id, name=self.name, slots=self.slots, hostname=socket.gethostname(),
                       handlers=[W.Handler(queue=r.queue, job_slug=r.job_slug) for r in self._routes.values()])


class _Session:
    """One stream: assignments in, results out."""

    def __init__(self, worker: Worker, call: Any, channel: grpc.aio.Channel) -> None:
        self._worker = worker
        self._call = call
        self._channel = channel
        self._running: dict[str, tuple[asyncio.Task[None], TaskContext]] = {}
        self._results: list[W.TaskResult] = []
        self._has_results = asyncio.Event()
        self._unacked: set[str] = set()  # results sent, not yet accepted or rejected
        self._changed = asyncio.Event()  # a handler ended or a result was answered (for the drain)
        self._write_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        await self._write(W.ConnectRequest(hello=self._worker._hello()))
        sender = asyncio.create_task(self._send_results())
        try:
            reader = asyncio.create_task(self._read())
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reader in done:
                reader.result()  # raises what ended the stream
                return
            await self._drain(reader)
            reader.cancel()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _drain(self, reader: asyncio.Task[None]) -> None:
        """Stopping: nothing new, the running handlers finish, their results are answered (within the
        worker's drain timeout, and while the stream lasts)."""
        await self._write(W.ConnectRequest(capacity=W.SetCapacity(slots=0)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._worker.drain_timeout
        while (self._running or self._results or self._unacked) and not reader.done():
            self._changed.clear()
            if loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())

    async def _read(self) -> None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("message")
            if kind == "welcome":
                self._worker.session_id = message.welcome.session_id
                self._worker.draining.clear()
                self._worker.connected.set()
            elif kind == "drain":
                self._worker.draining.set()
            elif kind == "assignments":
                for assignment in message.assignments.assignments:
                    self._start(assignment)
            elif kind == "cancel":
                self._cancel(message.cancel)
            elif kind == "results_accepted":
                accepted = message.results_accepted
                self._unacked.difference_update(accepted.assignment_ids)
                for rejected in accepted.rejected:
                    self._unacked.discard(rejected.assignment_id)
                    log.info("result of run assignment %s rejected: %s", rejected.assignment_id, rejected.message)
                self._changed.set()

    def _cancel(self, cancel: W.CancelAssignments) -> None:
        """The server took these runs away: their results would be rejected, so their handlers stop."""
        for canceled in cancel.assignments:
            running = self._running.get(canceled.assignment_id)
            if running is not None:
                task, ctx = running
                ctx.cancelled.set()
                task.cancel()

    def _start(self, a: W.Assignment) -> None:
        route = self._worker._routes.get(a.job_slug)
        ctx = TaskContext(run_id=a.run_id, assignment_id=a.assignment_id, job_slug=a.job_slug, queue=a.queue,
                          attempt=a.attempt, max_attempts=a.max_attempts,
                          deadline=a.deadline_time.ToDatetime() if a.HasField("deadline_time") else None,
                          run_token=a.run_token, last_checkpoint=_json(a.last_checkpoint_json), job_id=a.job_id,
                          _channel=self._channel)
        task = asyncio.create_task(self._handle(route, ctx, a))
        self._running[a.assignment_id] = (task, ctx)

    async def _handle(self, route: _Route | None, ctx: TaskContext, a: W.Assignment) -> None:
        started = time.monotonic()
        result = W.TaskResult(assignment_id=a.assignment_id, run_id=a.run_id, attempt=a.attempt)
        try:
            if route is None:
                raise NonRetryableError(f"this worker has no handler for {a.job_slug!r}")
            payload = _json(a.payload_json)
            if route.is_async:
                output = await route.fn(ctx, payload)
            else:
                loop = asyncio.get_running_loop()
                output = await loop.run_in_executor(self._worker._pool, functools.partial(route.fn, ctx, payload))
            if inspect.isawaitable(output):
                output = await output
            result.success.output_json = "" if output is None else json.dumps(output)
        except asyncio.CancelledError:
            ctx.cancelled.set()
            raise  # the run was taken away: no result
        except NonRetryableError as exc:
            result.failure.CopyFrom(W.TaskFailure(message=str(exc), error_type=type(exc).__name__, non_retryable=True))
        except Exception as exc:  # the handler's failure is the attempt's
            result.failure.CopyFrom(W.TaskFailure(message=str(exc), error_type=type(exc).__name__))
        finally:
            self._running.pop(a.assignment_id, None)
            self._changed.set()
        result.duration.FromMilliseconds(int((time.monotonic() - started) * 1000))
        self._results.append(result)
        self._has_results.set()

    async def _send_results(self) -> None:
        while True:
            await self._has_results.wait()
            await asyncio.sleep(FLUSH_S)  # let results that end together travel together
            self._has_results.clear()
            while self._results:
                batch, self._results = self._results[:RESULT_BATCH], self._results[RESULT_BATCH:]
                self._unacked.update(r.assignment_id for r in batch)
                await self._write(W.ConnectRequest(results=W.SubmitResults(results=batch)))

    async def _write(self, message: W.ConnectRequest) -> None:
        async with self._write_lock:
            await self._call.write(message)

    async def close(self) -> None:
        """The stream is over: the server gives its runs to other workers, so the handlers stop."""
        for task, ctx in list(self._running.values()):
            ctx.cancelled.set()
            task.cancel()
        await asyncio.gather(*(t for t, _ in self._running.values()), return_exceptions=True)
        self._call.cancel()


def _json(text: str) -> Any:
    return json.loads(text) if text else None


__all__ = ["NonRetryableError", "TaskContext", "Worker"]
