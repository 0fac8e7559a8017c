"""`client.runs`: read, cancel, replay, watch and wait for runs, blocking (Runs) and asyncio (AsyncRuns)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from strait_client import _holds, _ops
from strait_client._config import Timeout, seconds
from strait_client._errors import StraitError
from strait_client._jobs import AsyncJobs, Jobs
from strait_client._models import FeedEvent, Run, RunEvent, TriggeredRun
from strait_client._ops import DEFAULT_PAGE_SIZE
from strait_client._run_stats_models import RunStats
from strait_client._transport import AsyncTransport, Transport
from strait_client._watch import FeedWatch, RunWatch, follow, follow_async

EVENTS_PAGE_SIZE = 1000


class Runs:
    """`client.runs`: read, cancel, replay, watch and wait for runs."""

    def __init__(self, transport: Transport, jobs: Jobs) -> None:
        self._t = transport
        self._jobs = jobs

    def _job_id(self, job: str | None) -> str | None:
        return self._jobs.get(job).id if job and not _ops.is_job_id(job) else job

    def get(self, run_id: str) -> Run:
        """Reads a run.

        Args:
            run_id: The run's id ("run_...").

        Returns:
            The run, with its attempts.

        Raises:
            NotFoundError: No such run in the project.
        """
        return self._t.call(_ops.get_run(run_id))

    def list(self, job: str | None = None, statuses: Iterable[str] | None = None,
             created_after: datetime | None = None, created_before: datetime | None = None, *,
             tags: Mapping[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Run]:
        """The project's runs, newest first, fetching pages as the iteration proceeds.

        Args:
            job: Only this job's runs (id or slug; a slug is resolved first).
            statuses: Only runs in one of these statuses (RunStatus members or their names).
            created_after: Only runs created after this aware datetime.
            created_before: Only runs created before this aware datetime.
            tags: Only runs carrying all these tags (key and value).
            page_size: Runs per call (1..1000; a page holds fewer when big runs would not fit in one reply).

        Returns:
            An iterator of runs.

        Raises:
            NotFoundError: `job` names no job.
            ValueError: A status is not a RunStatus, or a datetime is naive.
        """
        return self._t.pages(_ops.list_runs(self._job_id(job), statuses, created_after, created_before, page_size,
                                            tags))

    def stats(self, *, window: timedelta | float | None = None, bucket: timedelta | float | None = None,
              job: str | None = None) -> RunStats:
        """The project's runs over a recent window, counted in buckets, and every job's unfinished runs now.

        Args:
            window: How far back from now (a timedelta or seconds): 1 minute to 24 hours; None means 1 hour.
            bucket: The width of each bucket: at least 1 minute, at most the window, and at most 288 buckets in
                it; None means 5 minutes (or the window, when shorter). Buckets start at whole multiples of the
                width (since the Unix epoch), the last one holding now.
            job: Only this job's runs and queue (id or slug).

        Returns:
            The buckets (runs created; finished by final status; wait and duration percentiles of the finished
            ones), their totals, and the queued, delayed and executing runs of each job that has any.

        Raises:
            InvalidArgumentError: The window or bucket is out of range (see `field_violations`).
            NotFoundError: `job` names no job of the project.
        """
        return self._t.call(_ops.run_stats(window, bucket, job))

    def cancel(self, run_id: str, reason: str = "") -> Run:
        """Cancels a run that has not finished (an executing run's late result is ignored).

        Args:
            run_id: The run's id.
            reason: Kept in the run's status-change event.

        Returns:
            The canceled run.

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run has already finished.
        """
        return self._t.call(_ops.cancel_run(run_id, reason))

    def replay(self, run_id: str, idempotency_key: str = "") -> TriggeredRun:
        """Creates a new run from a finished one (dead_letter included), with its payload, linked to it by
        `replay_of_run_id`.

        Args:
            run_id: The finished run's id.
            idempotency_key: A repeat with the same key returns the first replay instead of a new one.

        Returns:
            The new run, with `idempotent_repeat` true when the key matched an earlier replay.

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run has not finished.
        """
        return self._t.call(_ops.replay_run(run_id, idempotency_key))

    def events(self, run_id: str, *, after_sequence: int = 0) -> builtins.list[RunEvent]:
        """The run's stored events in sequence order.

        Args:
            run_id: The run's id.
            after_sequence: Only events after this sequence number.

        Returns:
            The events.

        Raises:
            NotFoundError: No such run.
        """
        return list(self._t.pages(_ops.list_run_events(run_id, after_sequence, EVENTS_PAGE_SIZE)))

    def watch(self, run_id: str, *, after_sequence: int = 0, timeout: Timeout | None = None) -> Iterator[RunEvent]:
        """The run's events in sequence order, stored then live, until its terminal event.

        Reconnects by itself (from the last sequence received, so nothing is missed or repeated) when the
        connection drops or the server ends the stream at its maximum duration.

        Args:
            run_id: The run's id.
            after_sequence: Start after this sequence number.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An iterator of events that ends after the run's terminal status change.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = RunWatch(run_id, after_sequence, None if timeout is None else seconds(timeout))
        return follow(self._t.stub("runs").WatchRun, watch, self._t.metadata)

    def watch_all(self, *, job: str | None = None, statuses: Iterable[str] | None = None,
                  tags: Mapping[str, str] | None = None, resume_token: str = "",
                  from_start: bool = False) -> Iterator[FeedEvent]:
        """The project's run events in commit order, live, until you stop iterating.

        Reconnects by itself from the last resume token when the connection drops or the stream ages out.

        Args:
            job: Only this job's events (id or slug; a slug is resolved first).
            statuses: Only status changes into one of these statuses (other event types are left out).
            tags: Only events of runs carrying all these tags.
            resume_token: Continue after the event that carried this token (FeedEvent.resume_token).
            from_start: Without a resume token, start from the oldest stored event instead of now.

        Returns:
            An endless iterator of events, each with its `resume_token`: store the last one processed.

        Raises:
            NotFoundError: `job` names no job.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = FeedWatch(self._job_id(job), statuses, tags, resume_token, from_start)
        return follow(self._t.stub("runs").WatchRuns, watch, self._t.metadata)

    def wait(self, run_id: str, timeout: Timeout = 60.0) -> Run:
        """Waits until the run reaches a terminal status, watching its events (not polling).

        Args:
            run_id: The run's id.
            timeout: How long to wait at most: seconds or a timedelta.

        Returns:
            The finished run (as `get` returns it).

        Raises:
            TimeoutError: The run did not finish within `timeout`. The message says what holds it, e.g. "run
                run_... did not finish within 5.0s; still queued: endpoint circuit open: not attempted, next
                try at ...", or "...; still queued: concurrency limit: ...".
            NotFoundError: No such run.
        """
        try:
            for _ in self.watch(run_id, timeout=timeout):
                pass
        except TimeoutError as timed_out:
            raise TimeoutError(self._why_unfinished(run_id, str(timed_out))) from None
        return self.get(run_id)

    def _why_unfinished(self, run_id: str, timed_out: str) -> str:
        try:
            run = self.get(run_id)
            job = self._jobs.get(run.job_id) if _holds.needs_job(run) else None
        except StraitError:  # only an explanation: the timeout stands without it
            return timed_out
        return _holds.timeout_message(timed_out, run, job)


class AsyncRuns:
    """`client.runs` of AsyncClient: the methods of Runs, awaited; `list`, `watch` and `watch_all` are async
    iterators."""

    def __init__(self, transport: AsyncTransport, jobs: AsyncJobs) -> None:
        self._t = transport
        self._jobs = jobs

    async def _job_id(self, job: str | None) -> str | None:
        return (await self._jobs.get(job)).id if job and not _ops.is_job_id(job) else job

    async def get(self, run_id: str) -> Run:
        """Reads a run.

        Args:
            run_id: The run's id ("run_...").

        Returns:
            The run, with its attempts.

        Raises:
            NotFoundError: No such run in the project.
        """
        return await self._t.call(_ops.get_run(run_id))

    async def list(self, job: str | None = None, statuses: Iterable[str] | None = None,
                   created_after: datetime | None = None, created_before: datetime | None = None, *,
                   tags: Mapping[str, str] | None = None,
                   page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Run]:
        """The project's runs, newest first, fetching pages as the iteration proceeds.

        Args:
            job: Only this job's runs (id or slug; a slug is resolved first).
            statuses: Only runs in one of these statuses (RunStatus members or their names).
            created_after: Only runs created after this aware datetime.
            created_before: Only runs created before this aware datetime.
            tags: Only runs carrying all these tags (key and value).
            page_size: Runs per call (1..1000; a page holds fewer when big runs would not fit in one reply).

        Returns:
            An async iterator of runs.

        Raises:
            NotFoundError: `job` names no job.
            ValueError: A status is not a RunStatus, or a datetime is naive.
        """
        make = _ops.list_runs(await self._job_id(job), statuses, created_after, created_before, page_size,
                              tags)
        async for run in self._t.pages(make):
            yield run

    async def stats(self, *, window: timedelta | float | None = None, bucket: timedelta | float | None = None,
                    job: str | None = None) -> RunStats:
        """The project's runs over a recent window, counted in buckets, and every job's unfinished runs now.

        Args:
            window: How far back from now (a timedelta or seconds): 1 minute to 24 hours; None means 1 hour.
            bucket: The width of each bucket: at least 1 minute, at most the window, and at most 288 buckets in
                it; None means 5 minutes (or the window, when shorter). Buckets start at whole multiples of the
                width (since the Unix epoch), the last one holding now.
            job: Only this job's runs and queue (id or slug).

        Returns:
            The buckets (runs created; finished by final status; wait and duration percentiles of the finished
            ones), their totals, and the queued, delayed and executing runs of each job that has any.

        Raises:
            InvalidArgumentError: The window or bucket is out of range (see `field_violations`).
            NotFoundError: `job` names no job of the project.
        """
        return await self._t.call(_ops.run_stats(window, bucket, job))

    async def cancel(self, run_id: str, reason: str = "") -> Run:
        """Cancels a run that has not finished (an executing run's late result is ignored).

        Args:
            run_id: The run's id.
            reason: Kept in the run's status-change event.

        Returns:
            The canceled run.

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run has already finished.
        """
        return await self._t.call(_ops.cancel_run(run_id, reason))

    async def replay(self, run_id: str, idempotency_key: str = "") -> TriggeredRun:
        """Creates a new run from a finished one (dead_letter included), with its payload, linked to it by
        `replay_of_run_id`.

        Args:
            run_id: The finished run's id.
            idempotency_key: A repeat with the same key returns the first replay instead of a new one.

        Returns:
            The new run, with `idempotent_repeat` true when the key matched an earlier replay.

        Raises:
            NotFoundError: No such run.
            FailedPreconditionError: The run has not finished.
        """
        return await self._t.call(_ops.replay_run(run_id, idempotency_key))

    async def events(self, run_id: str, *, after_sequence: int = 0) -> builtins.list[RunEvent]:
        """The run's stored events in sequence order.

        Args:
            run_id: The run's id.
            after_sequence: Only events after this sequence number.

        Returns:
            The events.

        Raises:
            NotFoundError: No such run.
        """
        return [e async for e in self._t.pages(_ops.list_run_events(run_id, after_sequence, EVENTS_PAGE_SIZE))]

    def watch(self, run_id: str, *, after_sequence: int = 0,
              timeout: Timeout | None = None) -> AsyncIterator[RunEvent]:
        """The run's events in sequence order, stored then live, until its terminal event.

        Reconnects by itself (from the last sequence received, so nothing is missed or repeated) when the
        connection drops or the server ends the stream at its maximum duration.

        Args:
            run_id: The run's id.
            after_sequence: Start after this sequence number.
            timeout: How long the whole watch may take (seconds or a timedelta); None: no limit.

        Returns:
            An async iterator of events that ends after the run's terminal status change.

        Raises:
            TimeoutError: `timeout` passed first (raised while iterating, like the others).
            NotFoundError: No such run.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = RunWatch(run_id, after_sequence, None if timeout is None else seconds(timeout))
        return follow_async(self._t.stub("runs").WatchRun, watch, self._t.metadata)

    async def watch_all(self, *, job: str | None = None, statuses: Iterable[str] | None = None,
                        tags: Mapping[str, str] | None = None, resume_token: str = "",
                        from_start: bool = False) -> AsyncIterator[FeedEvent]:
        """The project's run events in commit order, live, until you stop iterating.

        Reconnects by itself from the last resume token when the connection drops or the stream ages out.

        Args:
            job: Only this job's events (id or slug; a slug is resolved first).
            statuses: Only status changes into one of these statuses (other event types are left out).
            tags: Only events of runs carrying all these tags.
            resume_token: Continue after the event that carried this token (FeedEvent.resume_token).
            from_start: Without a resume token, start from the oldest stored event instead of now.

        Returns:
            An endless async iterator of events, each with its `resume_token`: store the last one processed.

        Raises:
            NotFoundError: `job` names no job.
            UnavailableError: The server stayed unreachable through 8 reconnects in a row.
        """
        watch = FeedWatch(await self._job_id(job), statuses, tags, resume_token, from_start)
        async for event in follow_async(self._t.stub("runs").WatchRuns, watch, self._t.metadata):
            yield event

    async def wait(self, run_id: str, timeout: Timeout = 60.0) -> Run:  # noqa: ASYNC109 - mirrors Runs.wait
        """Waits until the run reaches a terminal status, watching its events (not polling).

        Args:
            run_id: The run's id.
            timeout: How long to wait at most: seconds or a timedelta.

        Returns:
            The finished run (as `get` returns it).

        Raises:
            TimeoutError: The run did not finish within `timeout`. The message says what holds it (see
                Runs.wait).
            NotFoundError: No such run.
        """
        try:
            async for _ in self.watch(run_id, timeout=timeout):
                pass
        except TimeoutError as timed_out:
            raise TimeoutError(await self._why_unfinished(run_id, str(timed_out))) from None
        return await self.get(run_id)

    async def _why_unfinished(self, run_id: str, timed_out: str) -> str:
        try:
            run = await self.get(run_id)
            job = await self._jobs.get(run.job_id) if _holds.needs_job(run) else None
        except StraitError:  # only an explanation: the timeout stands without it
            return timed_out
        return _holds.timeout_message(timed_out, run, job)
