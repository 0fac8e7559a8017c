"""ScheduleService: upcoming fire times, pause/resume, and firing a schedule by hand, for the schedules of jobs
(selector id or slug) and of workflows (selector workflow_id or workflow_slug)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc

from strait_client.v1 import schedule_pb2, schedule_pb2_grpc
from strait_server import errors, schedule
from strait_server.api import convert, validate
from strait_server.api.deps import Deps, require_schedule, selected_job, triggers_of
from strait_server.api.interceptor import project_id
from strait_server.api.workflow_runs import run_message
from strait_server.api.workflows import workflow_message
from strait_server.errors import Violations
from strait_server.model import Job
from strait_server.store.workflows import StoredWorkflow

_WORKFLOW_SELECTORS = ("workflow_id", "workflow_slug")


class ScheduleServicer(schedule_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    async def _target(self, v: Violations, request: Any) -> Job | StoredWorkflow:
        """The job or workflow the request's selector names, which must have a schedule: NOT_FOUND,
        FAILED_PRECONDITION (NO_SCHEDULE) otherwise."""
        which = request.WhichOneof("selector")
        if which is None or not getattr(request, which):
            v.add("selector", "set id or slug (a job), or workflow_id or workflow_slug (a workflow)")
            v.raise_if_any()
        if which not in _WORKFLOW_SELECTORS:
            job = await selected_job(self._d, v, request)
            require_schedule(job)
            return job
        value: str = getattr(request, which)
        validate.check_text(v, which, value, max_len=128)
        v.raise_if_any()
        workflow = await self._d.workflows.get(project_id(), workflow_id=value if which == "workflow_id" else "",
                                               slug=value if which == "workflow_slug" else "")
        if not workflow.attributes.schedule.cron:
            raise errors.FailedPrecondition(
                f"workflow {workflow.attributes.slug!r} has no schedule (set its cron first)", reason="NO_SCHEDULE",
                subject=workflow.id, violation_type="WORKFLOW_STATE")
        return workflow

    async def ListScheduleFireTimes(self, request: schedule_pb2.ListScheduleFireTimesRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> schedule_pb2.ListScheduleFireTimesResponse:
        v = Violations()
        if not 0 <= request.count <= 100:
            v.add("count", "must be between 0 (10) and 100")
        target = await self._target(v, request)
        if isinstance(target, Job):
            cron, tz = target.cron, target.timezone
        else:
            cron, tz = target.attributes.schedule.cron, target.attributes.schedule.timezone
        times = schedule.upcoming(cron, tz, datetime.now(UTC), request.count or 10)
        return schedule_pb2.ListScheduleFireTimesResponse(fire_times=[convert.timestamp(t) for t in times])

    async def PauseSchedule(self, request: schedule_pb2.PauseScheduleRequest,
                            context: grpc.aio.ServicerContext) -> schedule_pb2.PauseScheduleResponse:
        target = await self._target(Violations(), request)
        if isinstance(target, Job):
            job = await self._d.jobs.set_schedule_paused(target, True)
            return schedule_pb2.PauseScheduleResponse(job=convert.job(job))
        workflow = await self._d.workflows.set_schedule_paused(target, True)
        return schedule_pb2.PauseScheduleResponse(workflow=workflow_message(workflow))

    async def ResumeSchedule(self, request: schedule_pb2.ResumeScheduleRequest,
                             context: grpc.aio.ServicerContext) -> schedule_pb2.ResumeScheduleResponse:
        target = await self._target(Violations(), request)
        if isinstance(target, Job):
            job = await self._d.jobs.set_schedule_paused(target, False)
            return schedule_pb2.ResumeScheduleResponse(job=convert.job(job))
        workflow = await self._d.workflows.set_schedule_paused(target, False)
        return schedule_pb2.ResumeScheduleResponse(workflow=workflow_message(workflow))

    async def TriggerSchedule(self, request: schedule_pb2.TriggerScheduleRequest,
                              context: grpc.aio.ServicerContext) -> schedule_pb2.TriggerScheduleResponse:
        target = await self._target(Violations(), request)
        if isinstance(target, Job):
            run = await triggers_of(self._d).fire_schedule_now(target)
            return schedule_pb2.TriggerScheduleResponse(run=convert.run(run))
        # What TriggerWorkflow does with the schedule's input: the current version, the workflow's rules.
        workflow_run, _ = await self._d.workflow_runs.trigger(
            target.project_id, workflow_id=target.id, slug="", version=0,
            run_input=json.loads(target.attributes.schedule.input or "{}"), idempotency_key="")
        return schedule_pb2.TriggerScheduleResponse(workflow_run=run_message(workflow_run))
