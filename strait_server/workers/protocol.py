"""The protocol of one worker session (WorkerService.Connect): the hello, re-adoption, results, capacity,
and the stream's messages out; the hub (hub.py) claims, places and settles."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator

from strait_client.v1 import worker_pb2
from strait_server import model
from strait_server.config import Settings
from strait_server.dispatch.http import Attempt, outcome_of
from strait_server.errors import FieldViolation, InvalidArgument, Violations
from strait_server.queue import Outcome
from strait_server.store.jobs import JobStore
from strait_server.workers.hub import WorkerHub
from strait_server.workers.reports import Report, ReportRecorder, checked
from strait_server.workers.session import Assigned, Route, Session

W = worker_pb2
MAX_HANDLERS = 256
MAX_SLOTS = 10_000
MAX_BATCH = 1000
DEFAULT_BATCH = 256
# The first message must come within this many seconds.
HELLO_TIMEOUT_S = 30.0
HEARTBEAT_INTERVAL_S = 5


class WorkerSessions:
    def __init__(self, hub: WorkerHub, jobs: JobStore, settings: Settings, recorder: ReportRecorder) -> None:
        self._hub = hub
        self._jobs = jobs
        self._settings = settings
        self._recorder = recorder

    async def serve(self, project: str, key_id: str, request_iterator: AsyncIterator[worker_pb2.ConnectRequest]
                    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        """One session: the worker's messages in, the server's out, until the worker closes its side (or sends
        what ends the stream with an error)."""
        try:
            first = await asyncio.wait_for(anext(request_iterator), HELLO_TIMEOUT_S)
        except (StopAsyncIteration, TimeoutError):
            first = None
        if first is None or first.WhichOneof("message") != "hello":
            raise InvalidArgument([FieldViolation("hello", "the first message of a session must be a hello")],
                                  "the first message of a session must be a hello")
        hello = first.hello
        session = await self._session(project, key_id, hello)
        await self._hub.open(session)
        try:
            readopted = await self._readopt(session, hello)
        except BaseException:
            await self._hub.close(session)
            raise
        reports: asyncio.Queue[list[Report]] = asyncio.Queue()
        recorder = asyncio.create_task(self._recorder.serve(session, reports))
        reader = asyncio.create_task(self._read(request_iterator, session, reports))
        try:
            welcome = W.Welcome(session_id=session.id, max_batch_size=session.max_batch,
                                readopted_assignment_ids=readopted)
            welcome.heartbeat_interval.FromSeconds(HEARTBEAT_INTERVAL_S)
            yield W.ConnectResponse(welcome=welcome)
            unacked = hello.unacked_results  # after the welcome: their acceptance follows it on the stream
            for start in range(0, len(unacked), MAX_BATCH):
                self._results(session, W.SubmitResults(results=unacked[start:start + MAX_BATCH]))
            while (message := await session.outbox.get()) is not None:
                yield message
            reader.result()  # the reader ended the stream: raises what ended it, if anything
        finally:
            reader.cancel()
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
            await self._hub.close(session)

    async def _session(self, project: str, key_id: str, hello: worker_pb2.Hello) -> Session:
        v = Violations()
        if not 1 <= len(hello.handlers) <= MAX_HANDLERS:
            v.add("hello.handlers", f"must name 1 to {MAX_HANDLERS} handlers")
        if not 1 <= hello.slots <= MAX_SLOTS:
            v.add("hello.slots", f"must be between 1 and {MAX_SLOTS:,}")
        if not 0 <= hello.max_batch_size <= MAX_BATCH:
            v.add("hello.max_batch_size", f"must be between 0 (the default) and {MAX_BATCH:,}")
        for name, text in (("hello.worker_id", hello.worker_id), ("hello.name", hello.name),
                           ("hello.hostname", hello.hostname)):
            if len(text) > 255:
                v.add(name, "must be at most 255 characters")
        routes: list[Route] = []
        for i, handler in enumerate(hello.handlers[:MAX_HANDLERS]):
            job = await self._jobs.find(project, slug=handler.job_slug) if handler.job_slug else None
            path = f"hello.handlers[{i}]"
            if job is None:
                v.add(f"{path}.job_slug", f"no job {handler.job_slug!r} in this project")
            elif job.execution_mode is not model.ExecutionMode.WORKER:
                v.add(f"{path}.job_slug", f"job {handler.job_slug!r} is an HTTP job, not a worker job")
            elif job.queue != (handler.queue or "default"):
                v.add(f"{path}.queue", f"job {handler.job_slug!r} is in queue {job.queue!r}")
            else:
                routes.append(Route(job.queue, job.slug, job.id))
        v.raise_if_any()
        return Session(id=str(uuid.uuid4()), project_id=project, key_id=key_id,
                       worker_id=hello.worker_id or str(uuid.uuid4()),
                       name=hello.name, hostname=hello.hostname, slots=hello.slots,
                       max_batch=hello.max_batch_size or DEFAULT_BATCH, routes=routes)

    async def _readopt(self, session: Session, hello: worker_pb2.Hello) -> list[str]:
        held = {(h.assignment_id, h.run_id, h.attempt) for h in hello.held}
        held |= {(r.assignment_id, r.run_id, r.attempt) for r in hello.unacked_results}
        if len(held) > MAX_SLOTS + MAX_BATCH:
            raise InvalidArgument([FieldViolation("hello.held", "names more assignments than a worker can hold")],
                                  "too many held assignments")
        return await self._hub.readopt(session, sorted(held)) if held else []

    async def _read(self, requests: AsyncIterator[worker_pb2.ConnectRequest], session: Session,
                    reports: asyncio.Queue[list[Report]]) -> None:
        """The worker's messages until it closes its side; then (or on bad input) the stream ends."""
        try:
            async for message in requests:
                kind = message.WhichOneof("message")
                if kind == "results":
                    self._results(session, message.results)
                elif kind == "reports":
                    accepted, rejected = checked(session, message.reports)
                    if rejected:
                        session.outbox.put_nowait(W.ConnectResponse(
                            reports_recorded=W.ReportsRecorded(rejected=rejected)))
                    if accepted:
                        reports.put_nowait(accepted)
                elif kind == "capacity":
                    if not 0 <= message.capacity.slots <= MAX_SLOTS:
                        problem = f"must be between 0 and {MAX_SLOTS:,}"
                        raise InvalidArgument([FieldViolation("capacity.slots", problem)], "invalid capacity")
                    session.slots = message.capacity.slots
                    self._hub.notify()
                elif kind != "heartbeat":
                    raise InvalidArgument([FieldViolation(kind or "message", "is not expected here")],
                                          f"unexpected {kind or 'empty'} message in a session")
        finally:
            session.end()

    def _results(self, session: Session, batch: worker_pb2.SubmitResults) -> None:
        if len(batch.results) > MAX_BATCH:
            raise InvalidArgument([FieldViolation("results.results", f"at most {MAX_BATCH:,} results per batch")],
                                  "too many results in one batch")
        missing = [FieldViolation(f"results.results[{i}]", "needs a success or a failure")
                   for i, result in enumerate(batch.results) if result.WhichOneof("outcome") is None]
        if missing:  # before any result of the batch is taken: a refused batch changes nothing
            raise InvalidArgument(missing, "a result without an outcome")
        rejected = []
        for result in batch.results:
            held = session.held.get(result.assignment_id)
            if held is None or held.run.id != result.run_id or held.run.attempt != result.attempt:
                rejected.append(W.RejectedResult(
                    assignment_id=result.assignment_id, reason=W.REJECT_REASON_STALE_ASSIGNMENT,
                    message="this session holds no such assignment"))
                continue
            session.take(result.assignment_id)
            self._hub.submit(session, self._outcome(session, held, result), held.assignment_id)
        session.reject(rejected)

    def _outcome(self, session: Session, held: Assigned, result: worker_pb2.TaskResult) -> Outcome:
        run = held.run
        duration_ms = result.duration.ToMilliseconds() if result.HasField("duration") else 0.0
        started = held.start_time()
        source = f"worker:{session.worker_id}"
        if result.WhichOneof("outcome") == "success":
            output, problem = _output(result.success.output_json, self._settings.max_output_bytes)
            if problem is None:
                return outcome_of(run, Attempt(200, "", "", output, source), started, duration_ms)
            attempt = Attempt(0, problem, model.ErrorClass.HANDLER, None, source)
            return outcome_of(run, attempt, started, duration_ms)
        failure = result.failure
        message = (f"{failure.error_type}: {failure.message}" if failure.error_type else failure.message)[:4096]
        outcome = outcome_of(run, Attempt(0, message or "the handler failed", model.ErrorClass.HANDLER, None,
                                          source), started, duration_ms)
        if failure.non_retryable:
            return dataclasses.replace(outcome, to_status=model.RunStatus.FAILED, error_class=model.ErrorClass.JOB,
                                       delay_ms=0)
        return outcome


def _output(text: str, limit: int) -> tuple[str | None, str | None]:
    """The output as stored (JSON text, or None for none), or why it is refused."""
    if not text:
        return None, None
    if len(text.encode()) > limit:
        return None, f"output refused: larger than {limit:,} bytes"
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return None, "output refused: not JSON"
    return text, None

