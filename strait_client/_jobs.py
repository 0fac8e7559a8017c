"""`client.jobs`: job definitions and triggers, blocking (Jobs) and asyncio (AsyncJobs)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from strait_client import _ops
from strait_client._models import Job, TriggeredRun
from strait_client._ops import DEFAULT_PAGE_SIZE, RunOptions
from strait_client._transport import AsyncTransport, Transport


class Jobs:
    """`client.jobs`: job definitions and triggers. A job is named by id ("job_...") or by slug."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, slug: str, endpoint_url: str = "", **fields: Any) -> Job:
        """Creates a job.

        Args:
            slug: Unique in the project: 1-128 of [a-z0-9_-], starting with a letter or digit.
            endpoint_url: The http(s) URL each run's payload is POSTed to; empty for a worker job
                (execution_mode="worker", with its queue=..., run by workers: see strait_client.worker).
            **fields: Other Job fields: name, max_attempts, timeout=timedelta, retry_policy={...} or a
                JobRetryPolicy, tags={...}, cron, enabled=False, signing_secret...

        Returns:
            The job as stored.

        Raises:
            AlreadyExistsError: The slug is taken.
            InvalidArgumentError: A field is invalid (`field_violations` names each).
            TypeError: A keyword names no Job field.
        """
        return self._t.call(_ops.create_job(slug, endpoint_url, fields))

    def get(self, id_or_slug: str) -> Job:
        """Reads a job.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job.

        Raises:
            NotFoundError: No such job in the project.
        """
        return self._t.call(_ops.get_job(id_or_slug))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Job]:
        """Every job of the project, oldest first, fetching pages as the iteration proceeds.

        Args:
            page_size: Jobs per call (1..1000).

        Returns:
            An iterator of jobs.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_jobs(page_size))

    def update(self, id_or_slug: str, *, etag: str = "", **fields: Any) -> Job:
        """Changes exactly the given fields; the others keep their values.

        Args:
            id_or_slug: The job's id or slug (renaming by slug reads the job's id first).
            etag: When given, update only if the job is unchanged since this etag was read.
            **fields: The fields to change. None resets one to its default; a dict for a message field
                (retry_policy={"max_delay": ...}) changes only the sub-fields it names, while a message or a
                JobRetryPolicy replaces them all.

        Returns:
            The updated job.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such job.
            InvalidArgumentError: A value is invalid.
            ValueError: No field was given.
        """
        if "slug" in fields and not _ops.is_job_id(id_or_slug):
            id_or_slug = self.get(id_or_slug).id
        return self._t.call(_ops.update_job(id_or_slug, fields, etag))

    def delete(self, id_or_slug: str, *, etag: str = "") -> Job:
        """Deletes a job and frees its slug; every unfinished run of it is canceled.

        Args:
            id_or_slug: The job's id or slug.
            etag: When given, delete only if the job is unchanged since this etag was read.

        Returns:
            The job as it was.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such job.
        """
        return self._t.call(_ops.delete_job(id_or_slug, etag))

    def trigger(self, id_or_slug: str, payload: Mapping[str, Any] | None = None, *,
                scheduled_time: datetime | None = None, priority: int | None = None,
                timeout: timedelta | None = None, max_attempts: int | None = None, idempotency_key: str = "",
                tags: Mapping[str, str] | None = None, metadata: Mapping[str, str] | None = None,
                ttl: timedelta | None = None, concurrency_key: str = "", dedup_key: str = "",
                debounce_key: str = "") -> TriggeredRun:
        """Creates a run of the job. Retried after UNAVAILABLE without creating the run twice (the call carries a
        request id its retries reuse).

        Args:
            id_or_slug: The job's id or slug.
            payload: The JSON object POSTed to the endpoint ({} when None).
            scheduled_time: An aware datetime in the future: the run waits DELAYED until then.
            priority: Overrides the job's priority (0..10).
            timeout: Overrides the job's per-attempt timeout.
            max_attempts: Overrides the job's max_attempts.
            idempotency_key: A repeat with the same key returns the existing run instead of a new one.
            tags: Merged over the job's tags.
            metadata: Free-form strings kept on the run.
            ttl: Expire the run if it has not started this long after it is due.
            concurrency_key: The group the job's max_concurrency_per_key counts this run in.
            dedup_key: With the job's dedup_window, what makes two triggers identical (default: the payload).
            debounce_key: With the job's debounce_window, triggers with the same key collapse into one run.

        Returns:
            The run, with `idempotent_repeat`, `deduplicated` and `debounced` saying whether an existing run
            was returned instead of a new one, and why.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job is disabled.
            InvalidArgumentError: An option is invalid.
            ResourceExhaustedError: A limit or the project's budget is reached.
            ValueError: `scheduled_time` is a naive datetime.
        """
        options = RunOptions(payload, scheduled_time, priority, timeout, max_attempts, idempotency_key, tags,
                             metadata, ttl, concurrency_key, dedup_key, debounce_key)
        return self._t.call(_ops.trigger_job(id_or_slug, options))

    def batch_trigger(self, id_or_slug: str, runs: Sequence[RunOptions | Mapping[str, Any]], *,
                      full: bool = False) -> builtins.list[TriggeredRun]:
        """Creates up to 1,000 runs of one job in one transaction (all or none).

        Args:
            id_or_slug: The job's id or slug.
            runs: Each item a payload dict, or a RunOptions to set more than the payload.
            full: Return every field of each run; by default the basic view (ids, status, priority,
                max_attempts, times, idempotency key; `payload`, `tags` and `metadata` left empty).

        Returns:
            The runs in request order, each with `idempotent_repeat` true when it already existed (for any
            reason: `deduplicated` and `debounced` are None, a batch reply does not tell them apart).

        Raises:
            InvalidArgumentError: An item is invalid (nothing is created), or the full view would not fit in
                one reply.
            NotFoundError: No such job.
            TypeError: `runs` is not a list.
        """
        return self._t.call(_ops.batch_trigger_job(id_or_slug, runs, full))


class AsyncJobs:
    """`client.jobs` of AsyncClient: the methods of Jobs, awaited; `list` is an async iterator."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def create(self, slug: str, endpoint_url: str = "", **fields: Any) -> Job:
        """Creates a job.

        Args:
            slug: Unique in the project: 1-128 of [a-z0-9_-], starting with a letter or digit.
            endpoint_url: The http(s) URL each run's payload is POSTed to; empty for a worker job
                (execution_mode="worker", with its queue=..., run by workers: see strait_client.worker).
            **fields: Other Job fields: name, max_attempts, timeout=timedelta, retry_policy={...} or a
                JobRetryPolicy, tags={...}, cron, enabled=False, signing_secret...

        Returns:
            The job as stored.

        Raises:
            AlreadyExistsError: The slug is taken.
            InvalidArgumentError: A field is invalid (`field_violations` names each).
            TypeError: A keyword names no Job field.
        """
        return await self._t.call(_ops.create_job(slug, endpoint_url, fields))

    async def get(self, id_or_slug: str) -> Job:
        """Reads a job.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job.

        Raises:
            NotFoundError: No such job in the project.
        """
        return await self._t.call(_ops.get_job(id_or_slug))

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[Job]:
        """Every job of the project, oldest first, fetching pages as the iteration proceeds.

        Args:
            page_size: Jobs per call (1..1000).

        Returns:
            An async iterator of jobs.

        Raises:
            StraitError: A page could not be fetched (raised while iterating).
        """
        return self._t.pages(_ops.list_jobs(page_size))

    async def update(self, id_or_slug: str, *, etag: str = "", **fields: Any) -> Job:
        """Changes exactly the given fields; the others keep their values.

        Args:
            id_or_slug: The job's id or slug (renaming by slug reads the job's id first).
            etag: When given, update only if the job is unchanged since this etag was read.
            **fields: The fields to change. None resets one to its default; a dict for a message field
                (retry_policy={"max_delay": ...}) changes only the sub-fields it names, while a message or a
                JobRetryPolicy replaces them all.

        Returns:
            The updated job.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such job.
            InvalidArgumentError: A value is invalid.
            ValueError: No field was given.
        """
        if "slug" in fields and not _ops.is_job_id(id_or_slug):
            id_or_slug = (await self.get(id_or_slug)).id
        return await self._t.call(_ops.update_job(id_or_slug, fields, etag))

    async def delete(self, id_or_slug: str, *, etag: str = "") -> Job:
        """Deletes a job and frees its slug; every unfinished run of it is canceled.

        Args:
            id_or_slug: The job's id or slug.
            etag: When given, delete only if the job is unchanged since this etag was read.

        Returns:
            The job as it was.

        Raises:
            AbortedError: `etag` no longer matches.
            NotFoundError: No such job.
        """
        return await self._t.call(_ops.delete_job(id_or_slug, etag))

    async def trigger(self, id_or_slug: str, payload: Mapping[str, Any] | None = None, *,
                      scheduled_time: datetime | None = None, priority: int | None = None,
                      timeout: timedelta | None = None,  # noqa: ASYNC109 - the run's timeout, not this call's
                      max_attempts: int | None = None, idempotency_key: str = "",
                      tags: Mapping[str, str] | None = None, metadata: Mapping[str, str] | None = None,
                      ttl: timedelta | None = None, concurrency_key: str = "", dedup_key: str = "",
                      debounce_key: str = "") -> TriggeredRun:
        """Creates a run of the job. Retried after UNAVAILABLE without creating the run twice (the call carries a
        request id its retries reuse).

        Args:
            id_or_slug: The job's id or slug.
            payload: The JSON object POSTed to the endpoint ({} when None).
            scheduled_time: An aware datetime in the future: the run waits DELAYED until then.
            priority: Overrides the job's priority (0..10).
            timeout: Overrides the job's per-attempt timeout.
            max_attempts: Overrides the job's max_attempts.
            idempotency_key: A repeat with the same key returns the existing run instead of a new one.
            tags: Merged over the job's tags.
            metadata: Free-form strings kept on the run.
            ttl: Expire the run if it has not started this long after it is due.
            concurrency_key: The group the job's max_concurrency_per_key counts this run in.
            dedup_key: With the job's dedup_window, what makes two triggers identical (default: the payload).
            debounce_key: With the job's debounce_window, triggers with the same key collapse into one run.

        Returns:
            The run, with `idempotent_repeat`, `deduplicated` and `debounced` saying whether an existing run
            was returned instead of a new one, and why.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job is disabled.
            InvalidArgumentError: An option is invalid.
            ResourceExhaustedError: A limit or the project's budget is reached.
            ValueError: `scheduled_time` is a naive datetime.
        """
        options = RunOptions(payload, scheduled_time, priority, timeout, max_attempts, idempotency_key, tags,
                             metadata, ttl, concurrency_key, dedup_key, debounce_key)
        return await self._t.call(_ops.trigger_job(id_or_slug, options))

    async def batch_trigger(self, id_or_slug: str, runs: Sequence[RunOptions | Mapping[str, Any]], *,
                            full: bool = False) -> builtins.list[TriggeredRun]:
        """Creates up to 1,000 runs of one job in one transaction (all or none).

        Args:
            id_or_slug: The job's id or slug.
            runs: Each item a payload dict, or a RunOptions to set more than the payload.
            full: Return every field of each run; by default the basic view (ids, status, priority,
                max_attempts, times, idempotency key; `payload`, `tags` and `metadata` left empty).

        Returns:
            The runs in request order, each with `idempotent_repeat` true when it already existed (for any
            reason: `deduplicated` and `debounced` are None, a batch reply does not tell them apart).

        Raises:
            InvalidArgumentError: An item is invalid (nothing is created), or the full view would not fit in
                one reply.
            NotFoundError: No such job.
            TypeError: `runs` is not a list.
        """
        return await self._t.call(_ops.batch_trigger_job(id_or_slug, runs, full))
