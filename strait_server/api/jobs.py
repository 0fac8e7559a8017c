"""JobService: job definitions and triggers."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import grpc

from strait_client.v1 import job_pb2, job_pb2_grpc
from strait_server import errors
from strait_server.api import convert, replies, validate
from strait_server.api.deps import Deps, require_enabled, selected_job
from strait_server.api.interceptor import project_id
from strait_server.api.pagination import fingerprint, page_size
from strait_server.errors import Violations
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import Job, NewRun, Run, TriggerRequest
from strait_server.store.jobs import regates, spec_of
from strait_server.store.runs import Inserted, RepeatedRequest, ResultCheck

log = logging.getLogger(__name__)


# A trigger statement takes milliseconds; this leaves it ample time to commit.
REGATE_AGAIN_AFTER_S = 2.0


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._d = deps
        self._later: set[asyncio.Future[None]] = set()  # pending re-gates, kept from the collector
        self._reply_bytes = replies.budget(deps.settings.grpc_max_message_bytes)

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
        updated = await self._d.jobs.update(current, spec, etag=request.job.etag)
        if updated.enabled and not current.enabled:
            self._d.on_enqueued()  # its queued runs are claimable again
        if updated.execution_window_cron != current.execution_window_cron:
            self._d.on_delayed()  # runs that waited for the old window are due now
        if regates(current, spec):
            self._regate_again(updated.id)
        return job_pb2.UpdateJobResponse(job=convert.job(updated))

    def _regate_again(self, job_id: str) -> None:
        """The update re-gated the job's queued runs, but a trigger that read the job before the update
        committed may queue a run under the old gating just after: look again once such triggers are over."""
        async def later() -> None:
            await asyncio.sleep(REGATE_AGAIN_AFTER_S)
            try:
                await self._d.jobs.regate(job_id)
            except DATABASE_ERRORS as exc:
                log.warning("re-gating the queued runs of %s failed: %s", job_id, exc,
                            extra={"action": "regate_error", "job_id": job_id})
        task = asyncio.ensure_future(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def DeleteJob(self, request: job_pb2.DeleteJobRequest,
                        context: grpc.aio.ServicerContext) -> job_pb2.DeleteJobResponse:
        v = Violations()
        validate.check_text(v, "etag", request.etag, max_len=32)
        job = await self._job(v, request)
        deleted, canceled = await self._d.jobs.delete(job, etag=request.etag)
        self._d.events.published(canceled)
        return job_pb2.DeleteJobResponse(job=convert.job(deleted))

    async def _trigger(self, v: Violations, request: object, runs: list[NewRun],
                       full: replies.FullView | None = None) -> list[Inserted]:
        """`full`: the reply is the FULL view, which must fit; then the job is read first, for the size of the
        tags each run takes from it. A request id used before returns what its first call answered."""
        job_id, slug = validate.selector(v, request)
        ask = validate.trigger_request(v, request)
        v.raise_if_any()
        try:
            return await self._trigger_once(v, job_id, slug, runs, full, ask)
        except RepeatedRequest:
            assert ask is not None
            return await self._repeated(v, ask, len(runs), full)

    async def _trigger_once(self, v: Violations, job_id: str, slug: str, runs: list[NewRun],
                            full: replies.FullView | None, ask: TriggerRequest | None) -> list[Inserted]:
        project = project_id()
        await self._d.budgets.require(project)
        if full is None and not any(r.idempotency_key for r in runs):
            # The common case takes one round trip: the insert reads the job itself.
            created = await self._d.runs.insert_for_job(project, job_id, slug, runs, ask)
            if created is not None:
                self._d.announce(created)
                return [Inserted(r, False) for r in created]
            if ask is not None and await self._d.runs.repeated(project, ask.request_id) is not None:
                raise RepeatedRequest()  # answered before, even if the job is now gone or disabled
        job = await self._d.jobs.get(project, job_id=job_id, slug=slug)
        require_enabled(job)
        check: ResultCheck | None = None
        if full is not None:
            full.require_new_runs_fit(job.tags)  # before anything is written
            check = _fitting(full)
        return await self._write(v, job, runs, check, read_first=full is not None, ask=ask)

    async def _repeated(self, v: Violations, ask: TriggerRequest, count: int,
                        full: replies.FullView | None = None) -> list[Inserted]:
        """The answer of the earlier call that used this request id, if this call repeats it."""
        found = await self._d.runs.repeated(project_id(), ask.request_id)
        if found is None:  # forgotten between the conflict and this read
            raise errors.Aborted("the request id was in use meanwhile; retry")
        selector, results = found
        if selector != ask.selector or len(results) != count:
            v.add("request_id", "was used in the last 24 hours by a call with another job or number of runs")
            v.raise_if_any()
        if full is not None:
            full.require_fits(i.run for i in results)
        return results

    async def _write(self, v: Violations, job: Job, runs: list[NewRun], check: ResultCheck | None, *,
                     read_first: bool, ask: TriggerRequest | None) -> list[Inserted]:
        """Triggers a job read beforehand. `read_first`: on purpose, not because the one-statement insert
        refused a job that dedups, debounces, or changed meanwhile."""
        if job.debounce_window_ms:
            for i, r in enumerate(runs):
                if r.idempotency_key:
                    v.add(f"runs[{i}].idempotency_key" if len(runs) > 1 else "options.idempotency_key",
                          "cannot be used with a debounced job: its triggers collapse into one run anyway")
            v.raise_if_any()
            inserted = await self._d.runs.debounce(job, runs, check, ask)
            self._d.events.published(i.run.id for i in inserted if i.debounced)
        elif read_first or job.dedup_window_ms or any(r.idempotency_key for r in runs):
            inserted = await self._d.runs.insert(job, runs, check=check, request=ask)
        else:
            raise errors.Aborted("the job changed while triggering it; retry")
        self._d.announce(i.run for i in inserted if not (i.repeat or i.deduplicated or i.debounced))
        return inserted

    async def _dispatch_now(self, v: Violations, request: job_pb2.TriggerJobRequest, new: NewRun,
                            now: datetime) -> Run | None:
        """At idle, in a process that also dispatches: write the run already claimed and start it at
        once, saving the wake-up and the claim round trip. None when it has to be queued (or was, by an
        earlier call with the same request id)."""
        direct = self._d.direct
        if (direct is None or new.idempotency_key or (new.scheduled_time and new.scheduled_time > now)
                or not direct.accepts_direct()):
            return None
        job_id, slug = validate.selector(v, request)
        ask = validate.trigger_request(v, request)
        v.raise_if_any()
        await self._d.budgets.require(project_id())
        try:
            written = await self._d.runs.insert_dispatching(project_id(), job_id, slug, new, direct.owner, ask)
        except RepeatedRequest:
            return None  # the usual path answers it
        if written is None:
            return None
        run, claimed = written
        direct.start_claimed(claimed)
        # Let the dispatch run up to its request's write before this answer is built and sent: the endpoint
        # hears of the run ~0.4 ms sooner at idle, the caller ~0.1 ms later.
        await asyncio.sleep(0)
        self._d.events.published([run.id])
        return run

    async def TriggerJob(self, request: job_pb2.TriggerJobRequest,
                         context: grpc.aio.ServicerContext) -> job_pb2.TriggerJobResponse:
        v = Violations()
        now = validate.utc_now()
        new = validate.run_options(v, "options", request.options,
                                   max_payload=self._d.settings.max_payload_bytes, now=now)
        run = await self._dispatch_now(v, request, new, now)
        if run is not None:
            return job_pb2.TriggerJobResponse(run=convert.run(run))
        [result] = await self._trigger(v, request, [new])
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
        results = await self._trigger(v, request, news, full)
        runs = [r.run for r in results]
        response = job_pb2.BatchTriggerJobResponse(
            idempotent_repeats=[r.repeat or r.deduplicated or r.debounced for r in results])
        if full is not None:
            response.runs.extend(full.messages(runs))
        else:
            convert.add_runs_basic(response.runs, runs)
        return response


def _fitting(full: replies.FullView) -> ResultCheck:
    """Checks, before the commit, the reply of runs that keys returned: written earlier, or shared by several
    requested runs, they may be larger than the request tells."""
    def check(inserted: list[Inserted]) -> None:
        full.require_fits(i.run for i in inserted)
    return check
