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
import importlib
import inspect
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc

from strait_client._async_run_context import AsyncRunContext
from strait_client._config import ClientConfig, Keepalive, env_settings, open_aio_channel, with_env_tls
from strait_client._dispatch_info import DispatchInfo
from strait_client._errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    StraitError,
    from_rpc_error,
)
from strait_client._transport import auth_metadata
from strait_client.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger("strait_client.worker")
W = worker_pb2

# Results (and logs and progress) are sent in batches: at most this many, gathered for at most FLUSH_S.
RESULT_BATCH = 256
REPORT_BATCH = 1000
FLUSH_S = 0.001
# Streams that are refused for these reasons are not retried: the worker's setup is wrong.
FATAL = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED})

Handler = Callable[["TaskContext", Any], Any]


class StreamGone(Exception):
    """The session's stream ended under a write: the worker reconnects."""


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
    # The worker's current connection (a handler outlives a stream that breaks; the next one carries on).
    _channel_of: Callable[[], grpc.aio.Channel | None] = field(default=lambda: None, repr=False)
    # Sends a log line or progress on the worker's stream; its sequence number once recorded.
    _submit: Callable[[W.TaskReport], Awaitable[int]] | None = field(default=None, repr=False)
    _reporter: tuple[grpc.aio.Channel | None, AsyncRunContext] | None = field(default=None, repr=False)

    def _report(self) -> AsyncRunContext:
        """RunContextService for this run, over the worker's current connection (made when first used)."""
        channel = self._channel_of()
        if self._reporter is None or self._reporter[0] is not channel:
            info = DispatchInfo(self.run_id, self.job_id, self.attempt, self.run_token, self.last_checkpoint)
            self._reporter = (channel, AsyncRunContext(info, channel=channel))
        return self._reporter[1]

    async def log(self, message: str, level: str = "info", data: Mapping[str, Any] | None = None) -> int:
        """Appends a log line to the run's events (from an async handler). It travels on the worker's stream,
        batched with the other handlers' lines, and returns once the server recorded it.

        Args:
            message: The line.
            level: debug, info, warn or error.
            data: A JSON object kept with the line.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            InvalidArgumentError: The line, level or data is not valid.
        """
        if self._submit is None:
            return await self._report().log(message, level, data)
        return await self._submit(W.TaskReport(assignment_id=self.assignment_id, log=W.TaskLog(
            message=message, level=level, data_json="" if data is None else json.dumps(data))))

    async def progress(self, percent: float, message: str = "", step: str = "") -> int:
        """Reports progress as a run event (from an async handler), on the worker's stream as `log` does.

        Args:
            percent: 0 to 100.
            message: What is happening.
            step: A name for the current step.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            InvalidArgumentError: The percent is not between 0 and 100, or a text is too long.
        """
        if self._submit is None:
            return await self._report().progress(percent, message, step)
        return await self._submit(W.TaskReport(assignment_id=self.assignment_id, progress=W.TaskProgress(
            percent=percent, message=message, step=step)))

    async def heartbeat(self) -> bool:
        """Extends the attempt's deadline by the job's timeout from now (for work that takes longer than the
        timeout but shows it is alive); the server stops counting down from the old deadline.

        Returns:
            True when the run was canceled meanwhile and the handler should stop.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or taken away).
        """
        return await self._report().heartbeat()

    async def checkpoint(self, state: Any) -> int:
        """Saves state handed to the run's next attempt, as its `last_checkpoint`.

        Args:
            state: JSON-encodable, at most 4 KiB encoded.

        Returns:
            The event's sequence number.

        Raises:
            FailedPreconditionError: The attempt has ended (finished, timed out or canceled).
            InvalidArgumentError: The value is too large or not valid.
        """
        return await self._report().checkpoint(state)


@dataclass(frozen=True)
class _Route:
    queue: str
    job_slug: str
    fn: Handler
    is_async: bool


# A worker's stream may stay quiet for long: without pings, a connection that died silently (a server machine
# gone, a NAT or load balancer that dropped it) would keep the worker waiting on it for good. Pinging every 20 s
# (the server accepts one every 10 s), a dead connection is noticed within 30 s and the worker connects again.
WORKER_KEEPALIVE = Keepalive(time=timedelta(seconds=20), timeout=timedelta(seconds=10))


class Worker:
    """A worker process's connection to Strait: its handlers, its slots, and the session that feeds them.

    Without a `config`, the worker's connection sends keepalive pings (WORKER_KEEPALIVE); a config of your
    own decides for itself (its `keepalive`)."""

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
        self._config = config or ClientConfig(keepalive=WORKER_KEEPALIVE)
        self._credentials = credentials
        self._routes: dict[str, _Route] = {}
        self._stop = asyncio.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._work = _Work()
        self._channel: grpc.aio.Channel | None = None  # the current session's
        self.session_id = ""  # the current session's, once welcomed
        self.connected = asyncio.Event()
        # Set when the server asked this worker to drain (DrainWorker, or the server shutting down): it is
        # assigned nothing more on this session. Cleared by the next session.
        self.draining = asyncio.Event()

    @classmethod
    def from_env(cls, **options: Any) -> Worker:
        """A worker for STRAIT_ADDRESS (default 127.0.0.1:50051) with the key in STRAIT_API_KEY, over TLS when the
        STRAIT_TLS* variables ask for it (see TlsConfig.from_env) and the options choose no TLS of their own.

        Args:
            **options: The keyword arguments of Worker (slots, name, worker_id, config, credentials).

        Returns:
            The worker.
        """
        address, api_key = env_settings()
        return cls(address, api_key, **with_env_tls(options))

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
                except StreamGone:
                    log.warning("worker stream ended")
                if self._stop.is_set():
                    break
                failures = 0 if time.monotonic() - started > 30 else failures + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(0.1 * 2 ** failures, 5.0))
        finally:
            await self._work.stop_all()  # stopped: what still runs goes to other workers
            self._work = _Work()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _session(self) -> None:
        channel = self._channel = open_aio_channel(self.address, self._config, self._credentials, None)
        session = _Session(self, worker_pb2_grpc.WorkerServiceStub(channel).Connect(metadata=self._metadata),
                           channel)
        try:
            await session.run(self._stop)
        finally:
            self.connected.clear()
            if self._stop.is_set():  # stopping: the handlers still running stop before the stream closes
                await self._work.stop_all()
            session.close()
            await channel.close()

    def _hello(self) -> W.Hello:
        return W.Hello(worker_id=self.worker_id, name=self.name, slots=self.slots, hostname=socket.gethostname(),
                       handlers=[W.Handler(queue=r.queue, job_slug=r.job_slug) for r in self._routes.values()])


@dataclass
class _Work:
    """What the worker runs and owes the server, kept across sessions: a stream that breaks (its server died,
    say) does not stop the handlers; the next session's hello names them and their unaccepted results, and
    the server readopts those whose runs are still theirs."""

    running: dict[str, tuple[asyncio.Task[None], TaskContext, W.Assignment]] = field(default_factory=dict)
    to_send: list[W.TaskResult] = field(default_factory=list)
    unacked: dict[str, W.TaskResult] = field(default_factory=dict)  # sent, not yet accepted or rejected
    has_results: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # a handler ended, a result was answered
    # Logs and progress: waiting to be sent, and sent but not answered (sent again by the next session).
    reports_to_send: list[W.TaskReport] = field(default_factory=list)
    reports_unanswered: dict[int, tuple[W.TaskReport, asyncio.Future[int]]] = field(default_factory=dict)
    has_reports: asyncio.Event = field(default_factory=asyncio.Event)
    _last_report_id: int = 0

    async def submit(self, report: W.TaskReport) -> int:
        """Queues a report for the stream; its event's sequence number once the server recorded it."""
        self._last_report_id += 1
        report.report_id = self._last_report_id
        recorded: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reports_unanswered[report.report_id] = (report, recorded)
        self.reports_to_send.append(report)
        self.has_reports.set()
        return await recorded

    def reports_answered(self, answer: W.ReportsRecorded) -> None:
        for done in answer.recorded:
            _, recorded = self.reports_unanswered.pop(done.report_id, (None, None))
            if recorded is not None and not recorded.done():
                recorded.set_result(done.sequence)
        for refused in answer.rejected:
            _, recorded = self.reports_unanswered.pop(refused.report_id, (None, None))
            if recorded is not None and not recorded.done():
                recorded.set_exception(_report_error(refused))

    def resend_reports(self) -> None:
        """A new session: what the last one did not answer is sent again (at least once)."""
        waiting = {r.report_id for r in self.reports_to_send}
        self.reports_to_send += [r for rid, (r, f) in sorted(self.reports_unanswered.items())
                                 if rid not in waiting and not f.done()]
        if self.reports_to_send:
            self.has_reports.set()

    def held(self) -> list[W.HeldAssignment]:
        return [W.HeldAssignment(assignment_id=aid, run_id=a.run_id, attempt=a.attempt)
                for aid, (_, _, a) in self.running.items()]

    def stop(self, assignment_id: str) -> None:
        """The run was taken away: its handler stops, and nothing is reported for it."""
        running = self.running.get(assignment_id)
        if running is not None:
            task, ctx, _ = running
            ctx.cancelled.set()
            task.cancel()

    async def stop_all(self) -> None:
        for assignment_id in list(self.running):
            self.stop(assignment_id)
        await asyncio.gather(*(t for t, _, _ in self.running.values()), return_exceptions=True)


class _Session:
    """One stream: assignments in, results out."""

    def __init__(self, worker: Worker, call: Any, channel: grpc.aio.Channel) -> None:
        self._worker = worker
        self._work = worker._work
        self._call = call
        self._channel = channel
        self._write_lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        work = self._work
        hello = self._worker._hello()
        hello.held.extend(work.held())
        # Results not yet accepted go with the hello; the server takes them for the readopted assignments.
        for result in work.to_send:
            work.unacked[result.assignment_id] = result
        work.to_send.clear()
        hello.unacked_results.extend(work.unacked.values())
        await self._write(W.ConnectRequest(hello=hello))
        sender = asyncio.create_task(self._send_results())
        reporter = asyncio.create_task(self._send_reports())
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
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamGone):  # the reader says how it ended
                await sender
            with contextlib.suppress(asyncio.CancelledError, StreamGone):
                await reporter

    async def _drain(self, reader: asyncio.Task[None]) -> None:
        """Stopping: nothing new, the running handlers finish, their results are answered (within the
        worker's drain timeout, and while the stream lasts)."""
        await self._write(W.ConnectRequest(capacity=W.SetCapacity(slots=0)))
        work = self._work
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._worker.drain_timeout
        while (work.running or work.to_send or work.unacked) and not reader.done():
            work.changed.clear()
            if loop.time() >= deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(work.changed.wait(), deadline - loop.time())

    async def _read(self) -> None:
        while True:
            message = await self._call.read()
            if message is grpc.aio.EOF:
                return
            self._received(message)

    def _received(self, message: W.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "welcome":
            self._welcome(message.welcome)
        elif kind == "drain":
            self._worker.draining.set()
        elif kind == "assignments":
            for assignment in message.assignments.assignments:
                self._start(assignment)
        elif kind == "cancel":
            for canceled in message.cancel.assignments:
                self._work.stop(canceled.assignment_id)
        elif kind == "results_accepted":
            self._answered(message.results_accepted)
        elif kind == "reports_recorded":
            self._work.reports_answered(message.reports_recorded)

    def _welcome(self, welcome: W.Welcome) -> None:
        """What the hello named and the server did not readopt was given to other workers: stop it."""
        readopted = set(welcome.readopted_assignment_ids)
        for assignment_id in [a for a in self._work.running if a not in readopted]:
            self._work.stop(assignment_id)
        for assignment_id in [a for a in self._work.unacked if a not in readopted]:
            del self._work.unacked[assignment_id]
        self._work.changed.set()
        self._work.resend_reports()  # after the stops above: reports of stopped handlers are not needed
        self._worker.session_id = welcome.session_id
        self._worker.draining.clear()
        self._worker.connected.set()

    def _answered(self, accepted: W.ResultsAccepted) -> None:
        work = self._work
        for assignment_id in accepted.assignment_ids:
            work.unacked.pop(assignment_id, None)
        for rejected in accepted.rejected:
            work.unacked.pop(rejected.assignment_id, None)
            log.info("result of run assignment %s rejected: %s", rejected.assignment_id, rejected.message)
        work.changed.set()

    def _start(self, a: W.Assignment) -> None:
        route = self._worker._routes.get(a.job_slug)
        ctx = TaskContext(run_id=a.run_id, assignment_id=a.assignment_id, job_slug=a.job_slug, queue=a.queue,
                          attempt=a.attempt, max_attempts=a.max_attempts,
                          deadline=a.deadline_time.ToDatetime() if a.HasField("deadline_time") else None,
                          run_token=a.run_token, last_checkpoint=_json(a.last_checkpoint_json), job_id=a.job_id,
                          _channel_of=lambda: self._worker._channel, _submit=self._work.submit)
        task = asyncio.create_task(_handle(self._worker, route, ctx, a))
        self._work.running[a.assignment_id] = (task, ctx, a)

    async def _send_results(self) -> None:
        work = self._work
        while True:
            await work.has_results.wait()
            await asyncio.sleep(FLUSH_S)  # let results that end together travel together
            work.has_results.clear()
            while work.to_send:
                batch, work.to_send = work.to_send[:RESULT_BATCH], work.to_send[RESULT_BATCH:]
                work.unacked.update((r.assignment_id, r) for r in batch)
                await self._write(W.ConnectRequest(results=W.SubmitResults(results=batch)))

    async def _send_reports(self) -> None:
        work = self._work
        while True:
            await work.has_reports.wait()
            await asyncio.sleep(FLUSH_S)  # let the lines of handlers that report together travel together
            work.has_reports.clear()
            while work.reports_to_send:
                batch, work.reports_to_send = work.reports_to_send[:REPORT_BATCH], work.reports_to_send[REPORT_BATCH:]
                await self._write(W.ConnectRequest(reports=W.SubmitReports(reports=batch)))

    async def _write(self, message: W.ConnectRequest) -> None:
        """Sends on the stream; StreamGone when the stream has ended (grpc raises InvalidStateError for a write
        after the call finished, and the reader reports how it ended)."""
        async with self._write_lock:
            if self._call.done():
                raise StreamGone
            try:
                await self._call.write(message)
            except asyncio.InvalidStateError:
                raise StreamGone from None

    def close(self) -> None:
        self._call.cancel()


async def _handle(worker: Worker, route: _Route | None, ctx: TaskContext, a: W.Assignment) -> None:
    """Runs one assignment's handler; its result waits in the worker's work to be sent."""
    work = worker._work
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
            output = await loop.run_in_executor(worker._pool, functools.partial(route.fn, ctx, payload))
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
        work.running.pop(a.assignment_id, None)
        work.changed.set()
    result.duration.FromMilliseconds(int((time.monotonic() - started) * 1000))
    work.to_send.append(result)
    work.has_results.set()


def _report_error(refused: W.RejectedReport) -> StraitError:
    if refused.reason == W.REJECT_REASON_INVALID_REPORT:
        return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, refused.message)
    error = FailedPreconditionError(grpc.StatusCode.FAILED_PRECONDITION, refused.message)
    error.reason = "RUN_NOT_EXECUTING"
    return error


def _json(text: str) -> Any:
    return json.loads(text) if text else None


def load_worker(target: str) -> Worker:
    """The Worker that `module:attribute` names, as `strait worker` finds it (the current directory is
    importable, as with `python -m`).

    Args:
        target: e.g. "myapp.tasks:worker".

    Returns:
        The Worker object.

    Raises:
        ValueError: `target` is not module:attribute, cannot be imported, or is not a Worker.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"name the worker as module:attribute, not {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {target!r}: {exc}") from exc
    if not isinstance(found, Worker):
        raise ValueError(f"{target!r} is a {type(found).__name__}, not a strait_client Worker")
    return found


__all__ = ["NonRetryableError", "TaskContext", "Worker", "load_worker"]
