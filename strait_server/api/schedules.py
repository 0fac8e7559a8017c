"""ScheduleService: upcoming fire times, pause/resume, and firing a schedule by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from strait_client.v1 import schedule_pb2, schedule_pb2_grpc
from strait_server import errors, schedule
from strait_server.api import convert
from strait_server.api.deps import Deps, selected_job
from strait_server.errors import Violations
from strait_server.model import Job, NewRun, RunStatus


class ScheduleServicer(schedule_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    async def _job(self, v: Violations, request: object) -> Job:
        return await selected_job(self._d, v, request)

    @staticmethod
    def _require_schedule(job: Job) -> None:
        if not job.cron:
            raise errors.FailedPrecondition(f"job {job.slug!r} has no schedule (set its cron first)",
                                            reason="NO_SCHEDULE", subject=job.id, violation_type="JOB_STATE")

    async def ListScheduleFireTimes(self, request: schedule_pb2.ListScheduleFireTimesRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> schedule_pb2.ListScheduleFireTimesResponse:
        v = Violations()
        if not 0 <= request.count <= 100:
            v.add("count", "must be between 1 and 100")
        job = await self._job(v, request)
        self._require_schedule(job)
        times = schedule.upcoming(job.cron, job.timezone, datetime.now(UTC), request.count or 10)
        return schedule_pb2.ListScheduleFireTimesResponse(fire_times=[convert.timestamp(t) for t in times])

    async def PauseSchedule(self, request: schedule_pb2.PauseScheduleRequest,
                            context: grpc.aio.ServicerContext) -> schedule_pb2.PauseScheduleResponse:
        job = await self._d.jobs.set_schedule_paused(await self._job(Violations(), request), True)
        return schedule_pb2.PauseScheduleResponse(job=convert.job(job))

    async def ResumeSchedule(self, request: schedule_pb2.ResumeScheduleRequest,
                             context: grpc.aio.ServicerContext) -> schedule_pb2.ResumeScheduleResponse:
        job = await self._d.jobs.set_schedule_paused(await self._job(Violations(), request), False)
        return schedule_pb2.ResumeScheduleResponse(job=convert.job(job))

    async def TriggerSchedule(self, request: schedule_pb2.TriggerScheduleRequest,
                              context: grpc.aio.ServicerContext) -> schedule_pb2.TriggerScheduleResponse:
        job = await self._job(Violations(), request)
        self._require_schedule(job)
        if not job.enabled:
            raise errors.FailedPrecondition(f"job {job.slug!r} is disabled", reason="JOB_DISABLED",
                                            subject=job.id, violation_type="JOB_STATE")
        [inserted] = await self._d.runs.insert(job, [NewRun(metadata={"triggered_by": "schedule_trigger"})])
        self._d.events.published([inserted.run.id])
        if inserted.run.status is RunStatus.QUEUED:
            self._d.on_enqueued()
        return schedule_pb2.TriggerScheduleResponse(run=convert.run(inserted.run))
