"""Creating runs on request: what happens behind TriggerJob, BatchTriggerJob and ReplayRun.

The API layer parses requests and converts results; this module decides which write path a trigger takes
(direct dispatch at idle, the one-statement insert, or the transaction that claims idempotency keys,
deduplicates or debounces), applies the project's budget and the job's state, answers a repeated request id
with the first call's runs, and, once the runs are committed, wakes whoever must hear of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from strait_server import errors
from strait_server.budget import BudgetGuard
from strait_server.errors import Violations
from strait_server.model import Job, NewRun, Run, TriggerRequest
from strait_server.queue import ClaimedRun
from strait_server.store.jobs import JobStore
from strait_server.store.runs import Inserted, RepeatedRequest, ResultCheck, RunStore


class DirectDispatch(Protocol):
    """A dispatcher in this process that can take a triggered run without a claim round trip."""

    owner: str

    def accepts_direct(self) -> bool: ...
    def start_claimed(self, run: ClaimedRun) -> None: ...


class DirectAssign(Protocol):
    """This process's worker plane, which can take a triggered run of a worker job without a claim."""

    owner: str

    def direct_route(self, project_id: str, job_id: str, slug: str) -> str | None: ...
    async def assign_claimed(self, run: ClaimedRun) -> None: ...


class ReplyCheck(Protocol):
    """A reply that echoes whole runs and must fit in one message: checked before anything is written, and
    again before the commit when keys return runs written earlier (see api/replies.FullView)."""

    def require_new_runs_fit(self, job_tags: Mapping[str, str]) -> None: ...
    def require_fits(self, runs: Iterable[Run]) -> None: ...


@dataclass(frozen=True)
class Target:
    """The job a trigger names (by id or slug) in the caller's project, and the call's request id."""

    project_id: str
    job_id: str
    slug: str
    request: TriggerRequest | None = None


def require_enabled(job: Job) -> None:
    if not job.enabled:
        raise errors.FailedPrecondition(f"job {job.slug!r} is disabled", reason="JOB_DISABLED",
                                        subject=job.id, violation_type="JOB_STATE")


class Triggers:
    def __init__(self, *, runs: RunStore, jobs: JobStore, budgets: BudgetGuard,
                 published: Callable[[Iterable[str]], None], announce: Callable[[Iterable[Run]], None],
                 direct: DirectDispatch | None = None, workers: DirectAssign | None = None) -> None:
        self._runs = runs
        self._jobs = jobs
        self._budgets = budgets
        self._published = published  # after a commit that wrote events of these runs
        self._announce = announce  # after runs were created (wakes dispatchers and the promoter too)
        self._direct = direct
        self._workers = workers

    async def dispatch_now(self, target: Target, new: NewRun, now: datetime) -> Run | None:
        """At idle, in a process that also dispatches: write the run already claimed and start it at
        once, saving the wake-up and the claim round trip (for a worker job, when a worker connected here
        handles it with a free slot). None when it has to be queued (or was, by an earlier call with the same
        request id)."""
        if new.idempotency_key or (new.scheduled_time and new.scheduled_time > now):
            return None
        workers = self._workers
        route = workers.direct_route(target.project_id, target.job_id, target.slug) if workers else None
        if workers is not None and route is not None:
            return await self._assign_now(workers, route, target, new)
        direct = self._direct
        if direct is None or not direct.accepts_direct():
            return None
        await self._budgets.require(target.project_id)
        try:
            written = await self._runs.insert_dispatching(target.project_id, target.job_id, target.slug, new,
                                                          direct.owner, target.request)
        except RepeatedRequest:
            return None  # the usual path answers it
        if written is None:
            return None
        run, claimed = written
        direct.start_claimed(claimed)
        # Let the dispatch run up to its request's write before the answer is built and sent: the endpoint
        # hears of the run ~0.4 ms sooner at idle, the caller ~0.1 ms later.
        await asyncio.sleep(0)
        self._published([run.id])
        return run

    async def _assign_now(self, workers: DirectAssign, route: str, target: Target, new: NewRun) -> Run | None:
        await self._budgets.require(target.project_id)
        try:
            written = await self._runs.insert_dispatching(target.project_id, target.job_id, target.slug, new,
                                                          workers.owner, target.request, route=route)
        except RepeatedRequest:
            return None  # the usual path answers it
        if written is None:
            return None
        run, claimed = written
        await workers.assign_claimed(claimed)
        self._published([run.id])
        return run

    async def trigger(self, target: Target, runs: list[NewRun], reply: ReplyCheck | None = None) -> list[Inserted]:
        """Creates the runs (or returns those their keys, dedup window or debounce key match). `reply`: the
        answer echoes whole runs, so the job is read first for the tags each run takes from it. A request id
        used before returns what its first call answered."""
        try:
            return await self._trigger_once(target, runs, reply)
        except RepeatedRequest:
            assert target.request is not None
            return await self._repeated(target.project_id, target.request, len(runs), reply)

    async def _trigger_once(self, target: Target, runs: list[NewRun], reply: ReplyCheck | None) -> list[Inserted]:
        project, ask = target.project_id, target.request
        await self._budgets.require(project)
        if reply is None and not any(r.idempotency_key for r in runs):
            # The common case takes one round trip: the insert reads the job itself.
            created = await self._runs.insert_for_job(project, target.job_id, target.slug, runs, ask)
            if created is not None:
                self._announce(created)
                return [Inserted(r, False) for r in created]
            if ask is not None and await self._runs.repeated(project, ask.request_id) is not None:
                raise RepeatedRequest()  # answered before, even if the job is now gone or disabled
        job = await self._jobs.get(project, job_id=target.job_id, slug=target.slug)
        require_enabled(job)
        check: ResultCheck | None = None
        if reply is not None:
            reply.require_new_runs_fit(job.tags)  # before anything is written
            check = _fitting(reply)
        return await self._write(job, runs, check, read_first=reply is not None, ask=ask)

    async def _write(self, job: Job, runs: list[NewRun], check: ResultCheck | None, *, read_first: bool,
                     ask: TriggerRequest | None) -> list[Inserted]:
        """Triggers a job read beforehand. `read_first`: on purpose, not because the one-statement insert
        refused a job that dedups, debounces, or changed meanwhile."""
        if job.debounce_window_ms:
            _refuse_idempotency_keys(runs)
            inserted = await self._runs.debounce(job, runs, check, ask)
            self._published(i.run.id for i in inserted if i.debounced)
        elif read_first or job.dedup_window_ms or any(r.idempotency_key for r in runs):
            inserted = await self._runs.insert(job, runs, check=check, request=ask)
        else:
            raise errors.Aborted("the job changed while triggering it; retry", reason="CONCURRENT_CONFLICT")
        self._announce(i.run for i in inserted if not (i.repeat or i.deduplicated or i.debounced))
        return inserted

    async def _repeated(self, project_id: str, ask: TriggerRequest, count: int,
                        reply: ReplyCheck | None) -> list[Inserted]:
        """The answer of the earlier call that used this request id, if this call repeats it."""
        found = await self._runs.repeated(project_id, ask.request_id)
        if found is None:  # forgotten between the conflict and this read
            raise errors.Aborted("the request id was in use meanwhile; retry", reason="CONCURRENT_CONFLICT")
        selector, results = found
        if selector != ask.selector or len(results) != count:
            v = Violations()
            v.add("request_id", "was used in the last 24 hours by a call with another job or number of runs")
            v.raise_if_any()
        if reply is not None:
            reply.require_fits(i.run for i in results)
        return results

    async def fire_schedule_now(self, job: Job) -> Run:
        """One run of a scheduled job now, outside its schedule (which is left as it is)."""
        require_enabled(job)
        await self._budgets.require(job.project_id)
        [inserted] = await self._runs.insert(job, [NewRun(metadata={"triggered_by": "schedule_trigger"})])
        self._announce([inserted.run])
        return inserted.run

    async def replay(self, project_id: str, run_id: str, idempotency_key: str) -> Inserted:
        """A new run of a finished run's job with its payload and options, linked to it (replay_of)."""
        original = await self._runs.get(project_id, run_id)
        job = await self._jobs.find(project_id, job_id=original.job_id)
        if job is None:
            raise errors.FailedPrecondition(f"the job of run {run_id!r} was deleted", reason="JOB_DELETED",
                                            subject=original.job_id, violation_type="JOB_STATE")
        await self._budgets.require(project_id)
        result = await self._runs.replay(project_id, job, run_id, idempotency_key)
        if not result.repeat:
            self._announce([result.run])
        return result


def _refuse_idempotency_keys(runs: list[NewRun]) -> None:
    v = Violations()
    for i, r in enumerate(runs):
        if r.idempotency_key:
            v.add(f"runs[{i}].idempotency_key" if len(runs) > 1 else "options.idempotency_key",
                  "cannot be used with a debounced job: its triggers collapse into one run anyway")
    v.raise_if_any()


def _fitting(reply: ReplyCheck) -> ResultCheck:
    """Checks, before the commit, the reply of runs that keys returned: written earlier, or shared by several
    requested runs, they may be larger than the request tells."""
    def check(inserted: list[Inserted]) -> None:
        reply.require_fits(i.run for i in inserted)
    return check
