"""Watching run events: the decisions (what to ask for, where to resume, when the watch is over, whether and
when to reconnect) live in RunWatch, WorkflowRunWatch and FeedWatch, which do no I/O. `follow` (blocking) and
`follow_async` (asyncio) only drive them over a gRPC stream, so Client and AsyncClient behave the same by construction.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import grpc

from strait_client import _ops, _workflow_run_ops
from strait_client._errors import from_rpc_error
from strait_client._models import FeedEvent, RunEvent
from strait_client._workflow_run_models import MapProgress, WorkflowRunChange, WorkflowRunEvent, WorkflowRunSnapshot

E_co = TypeVar("E_co", covariant=True)

WATCH_END_KEY = "strait-watch-end"
"""Trailing metadata of a WatchRun stream that ended OK: "run-finished", or "max-duration" (resume)."""
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_FAILURES = 8
"""Reconnects in a row (without an event received in between) before a watch gives up with the error."""


def reconnect_delay(failures: int) -> float:
    """Backoff with jitter between reconnects: 0.1 s doubling to 5 s."""
    return float(min(0.1 * 2 ** failures, 5.0) * random.uniform(0.5, 1.0))


def run_finished(trailing: Iterable[tuple[str, Any]] | None) -> bool:
    """Whether a stream that ended OK did so because the run finished (else it aged out: resume)."""
    return any(key == WATCH_END_KEY and value == "run-finished" for key, value in trailing or ())


class Watch(Protocol[E_co]):
    """What a driver asks of a watch. A driver opens a stream with request() and stream_timeout(), passes each
    message to receive() (yielding what it returns) until `finished`, then reports how the stream ended:
    stream_ended() with its trailing metadata, or failed() with its error, which says how long to wait before
    the next stream or raises."""

    @property
    def finished(self) -> bool: ...

    def request(self) -> Any: ...

    def stream_timeout(self) -> float | None: ...

    def receive(self, message: Any) -> E_co | None: ...

    def stream_ended(self, trailing: Iterable[tuple[str, Any]] | None) -> None: ...

    def failed(self, err: grpc.RpcError) -> float: ...


class _Reconnects:
    def __init__(self) -> None:
        self._failures = 0

    def failed(self, err: grpc.RpcError) -> float:
        """Seconds to wait before reconnecting after `err`; raises its StraitError when it is not resumable or
        after MAX_FAILURES reconnects in a row."""
        if err.code() not in RESUMABLE or self._failures >= MAX_FAILURES:
            raise from_rpc_error(err) from err
        self._failures += 1
        return reconnect_delay(self._failures)


class _SequenceWatch(_Reconnects):
    """One run's events by sequence, resumed after the last sequence received, until `finished`. `timeout`
    (seconds) bounds the whole watch: TimeoutError."""

    noun = "run"

    def __init__(self, run_id: str, after_sequence: int = 0, timeout: float | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.after = after_sequence
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def stream_timeout(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.001)

    def _received(self, sequence: int, ends_run: bool) -> None:
        self.after, self._failures = sequence, 0
        self._finished = ends_run

    def failed(self, err: grpc.RpcError) -> float:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self._deadline is not None:
            raise TimeoutError(f"{self.noun} {self.run_id} did not finish within {self._timeout}s") from err
        return super().failed(err)


class RunWatch(_SequenceWatch):
    """One run's events (WatchRun), resumed from the last sequence received, until its terminal event or a
    stream that ends with "run-finished". `timeout` (seconds) bounds the whole watch: TimeoutError."""

    def request(self) -> Any:
        return _ops.watch_run_request(self.run_id, self.after)

    def receive(self, message: Any) -> RunEvent | None:
        if message.WhichOneof("message") != "event":
            return None  # a keepalive
        event = RunEvent.from_proto(message.event)
        self._received(event.sequence, event.ends_run)
        return event

    def stream_ended(self, trailing: Iterable[tuple[str, Any]] | None) -> None:
        self._finished = run_finished(trailing)


class _WorkflowRunStream(_SequenceWatch):
    """One workflow run's stream (WatchWorkflowRun), resumed from the last sequence received, until the run
    ended. An ended run may open again (RetryWorkflowStep, ReplayWorkflowSubtree), so a final status change is
    not the end by itself: the server ends the stream after it only when the run is still ended then. A stream
    that ends OK after such an event (or a snapshot of an ended run), or without a single message (not even a
    keepalive, which an aged-out stream of an idle run has sent: the run had ended at or before `after`), ends
    the watch; any other stream that ends OK aged out: resume."""

    noun = "workflow run"

    def __init__(self, run_id: str, after_sequence: int = 0, timeout: float | None = None, *,
                 snapshot: bool = False) -> None:
        super().__init__(run_id, after_sequence, timeout)
        self._messages = 0
        self._last_ended_run = False
        self._want_snapshot = snapshot  # asked for until one arrives; a resumed stream goes on from its sequence

    def request(self) -> Any:
        self._messages = 0
        return _workflow_run_ops.watch_workflow_run_request(self.run_id, self.after, snapshot=self._want_snapshot)

    def _decode(self, message: Any) -> WorkflowRunEvent | WorkflowRunSnapshot | MapProgress | None:
        self._messages += 1
        kind = message.WhichOneof("message")
        if kind == "snapshot":
            snapshot = WorkflowRunSnapshot.from_proto(message.snapshot)
            self._want_snapshot = False
            self._received(snapshot.sequence, False)
            status = snapshot.workflow_run.status
            self._last_ended_run = status is not None and status.is_terminal
            return snapshot
        if kind == "map_progress":
            return MapProgress.from_proto(message.map_progress)
        if kind != "event":
            return None  # a keepalive
        event = WorkflowRunEvent.from_proto(message.event)
        self._received(event.sequence, False)
        self._last_ended_run = event.ends_run
        return event

    def stream_ended(self, trailing: Iterable[tuple[str, Any]] | None) -> None:
        self._finished = self._messages == 0 or self._last_ended_run


class WorkflowRunWatch(_WorkflowRunStream):
    """A workflow run's events (see _WorkflowRunStream)."""

    def receive(self, message: Any) -> WorkflowRunEvent | None:
        item = self._decode(message)
        return item if isinstance(item, WorkflowRunEvent) else None


class WorkflowRunProgressWatch(_WorkflowRunStream):
    """A snapshot of a workflow run, then its events and the counts of its running map steps (see
    _WorkflowRunStream)."""

    def __init__(self, run_id: str, timeout: float | None = None) -> None:
        super().__init__(run_id, 0, timeout, snapshot=True)

    def receive(self, message: Any) -> WorkflowRunEvent | WorkflowRunSnapshot | MapProgress | None:
        return self._decode(message)


class FeedWatch(_Reconnects):
    """The project's event feed (WatchRuns), resumed from the last resume token received; never finishes."""

    def __init__(self, job_id: str | None, statuses: Iterable[str] | None, tags: Mapping[str, str] | None,
                 resume_token: str, from_start: bool) -> None:
        super().__init__()
        self._filters = (job_id, _ops.status_list(statuses), dict(tags) if tags else None)  # reused per stream
        self.token = resume_token
        self._from_start = from_start

    @property
    def finished(self) -> bool:
        return False

    def request(self) -> Any:
        job_id, statuses, tags = self._filters
        return _ops.watch_runs_request(job_id, statuses, tags, self.token, self._from_start and not self.token)

    def stream_timeout(self) -> float | None:
        return None

    def receive(self, message: Any) -> FeedEvent | None:
        self.token, self._failures = message.resume_token or self.token, 0
        if message.WhichOneof("message") != "event":
            return None
        return FeedEvent.from_feed(message.event, self.token)

    def stream_ended(self, trailing: Iterable[tuple[str, Any]] | None) -> None:
        """The feed aged out on the server: the next stream resumes from the token."""


class WorkflowRunsFeedWatch(_Reconnects):
    """The project's workflow-run status changes (WatchWorkflowRuns), resumed from the last resume token
    received; never finishes."""

    def __init__(self, workflow_id: str | None, resume_token: str, from_start: bool) -> None:
        super().__init__()
        self._workflow_id = workflow_id or ""
        self.token = resume_token
        self._from_start = from_start

    @property
    def finished(self) -> bool:
        return False

    def request(self) -> Any:
        return _workflow_run_ops.watch_workflow_runs_request(self._workflow_id, self.token,
                                                             self._from_start and not self.token)

    def stream_timeout(self) -> float | None:
        return None

    def receive(self, message: Any) -> WorkflowRunChange | None:
        self.token, self._failures = message.resume_token or self.token, 0
        if message.WhichOneof("message") != "event":
            return None
        return WorkflowRunChange.from_proto(message)

    def stream_ended(self, trailing: Iterable[tuple[str, Any]] | None) -> None:
        """The feed aged out on the server: the next stream resumes from the token."""


def follow(open_stream: Callable[..., Any], watch: Watch[E_co], metadata: Any) -> Iterator[E_co]:
    """Drives `watch` over blocking streams opened with `open_stream(request, metadata=, timeout=)`."""
    while not watch.finished:
        stream = open_stream(watch.request(), metadata=metadata, timeout=watch.stream_timeout())
        try:
            for message in stream:
                if (event := watch.receive(message)) is not None:
                    yield event
                if watch.finished:
                    return
            watch.stream_ended(stream.trailing_metadata())
        except grpc.RpcError as err:
            time.sleep(watch.failed(err))
        finally:
            stream.cancel()


async def follow_async(open_stream: Callable[..., Any], watch: Watch[E_co], metadata: Any) -> AsyncIterator[E_co]:
    """Drives `watch` over grpc.aio streams opened with `open_stream(request, metadata=, timeout=)`."""
    while not watch.finished:
        call = open_stream(watch.request(), metadata=metadata, timeout=watch.stream_timeout())
        try:
            async for message in call:
                if (event := watch.receive(message)) is not None:
                    yield event
                if watch.finished:
                    return
            watch.stream_ended(await call.trailing_metadata())
        except grpc.RpcError as err:
            await asyncio.sleep(watch.failed(err))
        finally:
            call.cancel()
