"""ScheduleService: upcoming fire times, pause/resume, and firing a schedule by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from strait_client.v1 import schedule_pb2, schedule_pb2_grpc
from strait_server import schedule
from strait_server.api import convert
from strait_server.api.deps import Deps, require_schedule, selected_job, triggers_of
from strait_server.errors import Violations
from strait_server.model import Job


class ScheduleServicer(schedule_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    async def _job(self, v: Violations, request: object) -> Job:
        return await selected_job(self._d, v, request)

    async def ListScheduleFireTimes(self, request: schedule_pb2.ListScheduleFireTimesRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> schedule_pb2.ListScheduleFireTimesResponse:
        v = Violations()
        if not 0 <= request.count <= 100:
            v.add("count", "must be between 0 (10) and 100")
        job = await self._job(v, request)
        require_schedule(job)
        times = schedule.upcoming(job.cron, job.timezone, datetime.now(UTC), request.count or 10)
        return schedule_pb2.ListScheduleFireTimesResponse(fire_times=[convert.timestamp(t) for t in times])

    async def PauseSchedule(self, request: schedule_pb2.PauseScheduleRequest,
                            context: grpc.aio.ServicerContext) -> schedule_pb2.PauseScheduleResponse:
        job = await self._job(Violations(), request)
        require_schedule(job)
        job = await self._d.jobs.set_schedule_paused(job, True)
        return schedule_pb2.PauseScheduleResponse(job=convert.job(job))

    async def ResumeSchedule(self, request: schedule_pb2.ResumeScheduleRequest,
                             context: grpc.aio.ServicerContext) -> schedule_pb2.ResumeScheduleResponse:
        job = await self._job(Violations(), request)
        require_schedule(job)
        job = await self._d.jobs.set_schedule_paused(job, False)
        return schedule_pb2.ResumeScheduleResponse(job=convert.job(job))

    async def TriggerSchedule(self, request: schedule_pb2.TriggerScheduleRequest,
                              context: grpc.aio.ServicerContext) -> schedule_pb2.TriggerScheduleResponse:
        job = await self._job(Violations(), request)
        require_schedule(job)
        run = await triggers_of(self._d).fire_schedule_now(job)
        return schedule_pb2.TriggerScheduleResponse(run=convert.run(run))
