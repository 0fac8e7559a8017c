"""JobService: job definitions and triggers."""

from __future__ import annotations

import grpc

from strait_client.v1 import job_pb2, job_pb2_grpc
from strait_server.api import convert, replies, validate
from strait_server.api.deps import Deps, selected_job, triggers_of
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations
from strait_server.model import Job
from strait_server.service.job_updates import JobUpdates
from strait_server.service.triggers import Target
from strait_server.store.jobs import spec_of


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._updates = JobUpdates(deps.jobs, on_enqueued=deps.on_enqueued, on_delayed=deps.on_delayed)
        self._reply_bytes = replies.budget(deps.settings.grpc_max_message_bytes)
        self._triggers = triggers_of(deps)

    async def _job(self, v: Violations, request: object) -> Job:
        return await selected_job(self._d, v, request)

    async def CreateJob(self, request: job_pb2.CreateJobRequest,
                        context: grpc.aio.ServicerContext) -> job_pb2.CreateJobResponse:
        project = project_id()
        v = Violations()
        spec = validate.job_spec(v, request.job, allow_private=self._d.settings.allow_private_endpoints)
        v.raise_if_any()
        created = await self._d.jobs.create(project, spec)
        return job_pb2.CreateJobResponse(job=convert.job(created))

    async def GetJob(self, request: job_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> job_pb2.GetJobResponse:
        return job_pb2.GetJobResponse(job=convert.job(await self._job(Violations(), request)))

    async def ListJobs(self, request: job_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> job_pb2.ListJobsResponse:
        project = project_id()
        size = page_size(request.page_size)
        fp = fingerprint("jobs", project)
        cursor = self._d.page_tokens.decode(request.page_token, fp)
        items = await self._d.jobs.list_jobs(project, cursor, size + 1)
        # Jobs carry up to 84 tags and metadata entries of up to 1 KiB each: pages are bounded by bytes too.
        page = replies.page(items, convert.job, size=size, max_bytes=self._reply_bytes)
        last = page.last
        token = self._d.page_tokens.encode(last.create_time, last.id, fp) if last else ""
        return job_pb2.ListJobsResponse(jobs=page.messages, next_page_token=token)

    async def UpdateJob(self, request: job_pb2.UpdateJobRequest,
                        context: grpc.aio.ServicerContext) -> job_pb2.UpdateJobResponse:
        project = project_id()
        v = Violations()
        paths = validate.update_paths(v, list(request.update_mask.paths))
        if not request.job.id and not request.job.slug:
            v.add("job.id", "set job.id (or job.slug) to name the job to update")
        v.raise_if_any()
        if request.job.id:
            current = await self._d.jobs.get(project, job_id=request.job.id)
        else:
            current = await self._d.jobs.get(project, slug=request.job.slug)
        spec = validate.job_spec(v, request.job, allow_private=self._d.settings.allow_private_endpoints,
                                 base=spec_of(current), paths=paths)
        v.raise_if_any()
        updated = await self._updates.update(current, spec, etag=request.job.etag)
        return job_pb2.UpdateJobResponse(job=convert.job(updated))

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest,
                        context: grpc.aio.ServicerContext) -> job_pb2.DeleteJobResponse:
        v = Violations()
        validate.check_text(v, "etag", request.etag, max_len=32)
        job = await self._job(v, request)
        deleted, canceled = await self._d.jobs.delete(job, etag=request.etag)
        self._d.events.published(canceled)
        return job_pb2.DeleteJobResponse(job=convert.job(deleted))

    async def TriggerJob(self, request: job_pb2.TriggerJobRequest,
                         context: grpc.aio.ServicerContext) -> job_pb2.TriggerJobResponse:
        v = Violations()
        now = validate.utc_now()
        new = validate.run_options(v, "options", request.options,
                                   max_payload=self._d.settings.max_payload_bytes, now=now)
        target = _target(v, request)
        run = await self._triggers.dispatch_now(target, new, now)
        if run is not None:
            return job_pb2.TriggerJobResponse(run=convert.run(run))
        [result] = await self._triggers.trigger(target, [new])
        return job_pb2.TriggerJobResponse(run=convert.run(result.run), idempotent_repeat=result.repeat,
                                          deduplicated=result.deduplicated, debounced=result.debounced)

    async def BatchTriggerJob(self, request: job_pb2.BatchTriggerJobRequest,
                              context: grpc.aio.ServicerContext) -> job_pb2.BatchTriggerJobResponse:
        v = Violations()
        if not 1 <= len(request.runs) <= validate.MAX_BATCH:
            v.add("runs", f"must hold 1 to {validate.MAX_BATCH} runs")
        now = validate.utc_now()
        news = [validate.run_options(v, f"runs[{i}]", o, max_payload=self._d.settings.max_payload_bytes,
                                     now=now) for i, o in enumerate(request.runs[: validate.MAX_BATCH])]
        full = (replies.FullView(request.runs, self._reply_bytes) if request.view == job_pb2.RUN_VIEW_FULL
                else None)
        results = await self._triggers.trigger(_target(v, request), news, full)
        runs = [r.run for r in results]
        response = job_pb2.BatchTriggerJobResponse(
            idempotent_repeats=[r.repeat or r.deduplicated or r.debounced for r in results])
        if full is not None:
            response.runs.extend(full.messages(runs))
        else:
            convert.add_runs_basic(response.runs, runs)
        return response


def _target(v: Violations, request: job_pb2.TriggerJobRequest | job_pb2.BatchTriggerJobRequest) -> Target:
    """The job a trigger names and its request id; INVALID_ARGUMENT with everything wrong so far."""
    job_id, slug = validate.selector(v, request)
    ask = validate.trigger_request(v, request)
    v.raise_if_any()
    return Target(project_id(), job_id, slug, ask)
