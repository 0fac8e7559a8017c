"""`client.schedules`: the cron schedules of jobs, blocking (Schedules) and asyncio (AsyncSchedules)."""

from __future__ import annotations

import builtins
from datetime import datetime

from strait_client import _ops
from strait_client._models import Job, Run
from strait_client._transport import AsyncTransport, Transport


class Schedules:
    """`client.schedules`: the cron schedules of jobs (Job.cron), named by job id or slug."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def fire_times(self, id_or_slug: str, count: int = 10) -> builtins.list[datetime]:
        """When the job's schedule fires next.

        Args:
            id_or_slug: The job's id or slug.
            count: How many fire times (1..100).

        Returns:
            The next `count` fire times, as aware UTC datetimes.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return self._t.call(_ops.schedule_fire_times(id_or_slug, count))

    def pause(self, id_or_slug: str) -> Job:
        """Stops the schedule from firing; the job still accepts triggers.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job, with `schedule_paused` set.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return self._t.call(_ops.pause_schedule(id_or_slug))

    def resume(self, id_or_slug: str) -> Job:
        """Starts a paused schedule again from its next tick after now (missed ticks do not fire).

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job, with its `next_fire_time`.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return self._t.call(_ops.resume_schedule(id_or_slug))

    def trigger(self, id_or_slug: str) -> Run:
        """Creates a run now, as the schedule would.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The new run (its metadata says triggered_by: schedule_trigger).

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule, or is disabled.
        """
        return self._t.call(_ops.trigger_schedule(id_or_slug))


class AsyncSchedules:
    """`client.schedules` of AsyncClient: the methods of Schedules, awaited."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._t = transport

    async def fire_times(self, id_or_slug: str, count: int = 10) -> builtins.list[datetime]:
        """When the job's schedule fires next.

        Args:
            id_or_slug: The job's id or slug.
            count: How many fire times (1..100).

        Returns:
            The next `count` fire times, as aware UTC datetimes.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return await self._t.call(_ops.schedule_fire_times(id_or_slug, count))

    async def pause(self, id_or_slug: str) -> Job:
        """Stops the schedule from firing; the job still accepts triggers.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job, with `schedule_paused` set.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return await self._t.call(_ops.pause_schedule(id_or_slug))

    async def resume(self, id_or_slug: str) -> Job:
        """Starts a paused schedule again from its next tick after now (missed ticks do not fire).

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The job, with its `next_fire_time`.

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule.
        """
        return await self._t.call(_ops.resume_schedule(id_or_slug))

    async def trigger(self, id_or_slug: str) -> Run:
        """Creates a run now, as the schedule would.

        Args:
            id_or_slug: The job's id or slug.

        Returns:
            The new run (its metadata says triggered_by: schedule_trigger).

        Raises:
            NotFoundError: No such job.
            FailedPreconditionError: The job has no schedule, or is disabled.
        """
        return await self._t.call(_ops.trigger_schedule(id_or_slug))
