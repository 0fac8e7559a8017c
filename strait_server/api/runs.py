"""RunService: read runs and their events, cancel, replay."""

from __future__ import annotations

import grpc

from strait_client.v1 import run_pb2, run_pb2_grpc
from strait_server import errors
from strait_server.api import convert, validate
from strait_server.api.deps import Deps
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations


class RunServicer(run_pb2_grpc.RunServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    @staticmethod
    def _run_id(v: Violations, value: str, path: str = "id") -> str:
        validate.check_text(v, path, value, max_len=128, required=True)
        v.raise_if_any()
        return value

    async def GetRun(self, request: run_pb2.GetRunRequest,
                     context: grpc.aio.ServicerContext) -> run_pb2.GetRunResponse:
        run_id = self._run_id(Violations(), request.id)
        return run_pb2.GetRunResponse(run=convert.run(await self._d.runs.get(project_id(), run_id)))

    async def ListRuns(self, request: run_pb2.ListRunsRequest,
                       context: grpc.aio.ServicerContext) -> run_pb2.ListRunsResponse:
        project = project_id()
        v = Violations()
        validate.check_text(v, "job_id", request.job_id, max_len=128)
        statuses = []
        for i, s in enumerate(request.statuses):
            try:
                if s == 0:
                    raise ValueError
                statuses.append(convert.status_name(s))
            except ValueError:
                v.add(f"statuses[{i}]", "is not a known run status")
        after = before = None
        if request.HasField("create_time_after"):
            after = validate.timestamp(v, "create_time_after", request.create_time_after)
        if request.HasField("create_time_before"):
            before = validate.timestamp(v, "create_time_before", request.create_time_before)
        size = page_size(request.page_size)
        v.raise_if_any()
        fp = fingerprint("runs", project, request.job_id, sorted(statuses), after, before)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        items = await self._d.runs.list_runs(project, job_id=request.job_id or None, statuses=statuses or None,
                                        after=after, before=before, cursor=cursor, limit=size + 1)
        token = ""
        if len(items) > size:
            items = items[:size]
            token = self._d.page_tokens.encode(items[-1].create_time, items[-1].id, fp)
        return run_pb2.ListRunsResponse(runs=[convert.run(r) for r in items], next_page_token=token)

    async def CancelRun(self, request: run_pb2.CancelRunRequest,
                        context: grpc.aio.ServicerContext) -> run_pb2.CancelRunResponse:
        v = Violations()
        validate.check_text(v, "reason", request.reason, max_len=1024)
        run_id = self._run_id(v, request.id)
        run = await self._d.runs.cancel(project_id(), run_id, request.reason or "canceled by user")
        return run_pb2.CancelRunResponse(run=convert.run(run))

    async def ReplayRun(self, request: run_pb2.ReplayRunRequest,
                        context: grpc.aio.ServicerContext) -> run_pb2.ReplayRunResponse:
        v = Violations()
        validate.check_text(v, "idempotency_key", request.idempotency_key, max_len=256)
        run_id = self._run_id(v, request.id)
        project = project_id()
        original = await self._d.runs.get(project, run_id)
        job = await self._d.jobs.find(project, job_id=original.job_id)
        if job is None:
            raise errors.FailedPrecondition(f"the job of run {run_id!r} was deleted", reason="JOB_DELETED",
                                            subject=original.job_id, violation_type="JOB_STATE")
        result = await self._d.runs.replay(project, job, run_id, request.idempotency_key)
        if not result.repeat:
            self._d.on_enqueued()
        return run_pb2.ReplayRunResponse(run=convert.run(result.run), idempotent_repeat=result.repeat)

    async def ListRunEvents(self, request: run_pb2.ListRunEventsRequest,
                            context: grpc.aio.ServicerContext) -> run_pb2.ListRunEventsResponse:
        v = Violations()
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        run_id = self._run_id(v, request.run_id, "run_id")
        size = page_size(request.page_size)
        after = request.after_sequence
        if request.page_token:
            try:
                after = max(after, int(request.page_token))
            except ValueError:
                raise errors.InvalidArgument([errors.FieldViolation("page_token", "is not a valid token")]) from None
        items = await self._d.runs.events(project_id(), run_id, after, size + 1)
        token = ""
        if len(items) > size:
            items = items[:size]
            token = str(items[-1].seq)
        return run_pb2.ListRunEventsResponse(events=[convert.event(e) for e in items], next_page_token=token)
