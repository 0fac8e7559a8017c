"""`client.schedules`: the cron schedules of jobs and workflows, blocking (Schedules) and asyncio
(AsyncSchedules)."""

from __future__ import annotations

import builtins
from datetime import datetime

from strait_client import _ops
from strait_client._models import Job, Run
from strait_client._transport import AsyncTransport, Transport
from strait_client._workflow_models import Workflow
from strait_client._workflow_run_models import WorkflowRun


class Schedules:
    """`client.schedules`: the cron schedules of jobs (Job.cron), named by job id or slug, and of workflows
    (Workflow.cron): the `workflow_` methods, named by workflow id or slug."""

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

    def workflow_fire_times(self, id_or_slug: str, count: int = 10) -> builtins.list[datetime]:
        """When the workflow's schedule fires next.

        Args:
            id_or_slug: The workflow's id or slug.
            count: How many fire times (1..100).

        Returns:
            The next `count` fire times, as aware UTC datetimes.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return self._t.call(_ops.workflow_schedule_fire_times(id_or_slug, count))

    def pause_workflow(self, id_or_slug: str) -> Workflow:
        """Stops the workflow's schedule from firing; the workflow still accepts triggers.

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The workflow, with `schedule_paused` set.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return self._t.call(_ops.pause_workflow_schedule(id_or_slug))

    def resume_workflow(self, id_or_slug: str) -> Workflow:
        """Starts a workflow's paused schedule again from its next tick after now (missed ticks do not fire).

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The workflow, with its `next_fire_time`.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return self._t.call(_ops.resume_workflow_schedule(id_or_slug))

    def trigger_workflow(self, id_or_slug: str) -> WorkflowRun:
        """Starts a run of the workflow now, as its schedule would: the current version, with the schedule's
        input (the overlap policy is not applied, and the schedule is left as it is).

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The new workflow run.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule, or is disabled.
        """
        return self._t.call(_ops.trigger_workflow_schedule(id_or_slug))


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

    async def workflow_fire_times(self, id_or_slug: str, count: int = 10) -> builtins.list[datetime]:
        """When the workflow's schedule fires next.

        Args:
            id_or_slug: The workflow's id or slug.
            count: How many fire times (1..100).

        Returns:
            The next `count` fire times, as aware UTC datetimes.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return await self._t.call(_ops.workflow_schedule_fire_times(id_or_slug, count))

    async def pause_workflow(self, id_or_slug: str) -> Workflow:
        """Stops the workflow's schedule from firing; the workflow still accepts triggers.

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The workflow, with `schedule_paused` set.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return await self._t.call(_ops.pause_workflow_schedule(id_or_slug))

    async def resume_workflow(self, id_or_slug: str) -> Workflow:
        """Starts a workflow's paused schedule again from its next tick after now (missed ticks do not fire).

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The workflow, with its `next_fire_time`.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule.
        """
        return await self._t.call(_ops.resume_workflow_schedule(id_or_slug))

    async def trigger_workflow(self, id_or_slug: str) -> WorkflowRun:
        """Starts a run of the workflow now, as its schedule would: the current version, with the schedule's
        input (the overlap policy is not applied, and the schedule is left as it is).

        Args:
            id_or_slug: The workflow's id or slug.

        Returns:
            The new workflow run.

        Raises:
            NotFoundError: No such workflow.
            FailedPreconditionError: The workflow has no schedule, or is disabled.
        """
        return await self._t.call(_ops.trigger_workflow_schedule(id_or_slug))
