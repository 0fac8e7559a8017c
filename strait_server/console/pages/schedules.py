"""Schedules: the cron schedules of the project's jobs and workflows (expression, time zone, next fire time,
paused), paused, resumed or fired now through ScheduleService."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from strait_client._models import Job
from strait_client._workflow_models import Workflow
from strait_client.v1 import job_pb2, schedule_pb2, workflow_pb2
from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, render, session_of

MAX_PAGES = 5  # of 1,000 jobs, and of 1,000 workflows, looked through for schedules
KINDS = ("jobs", "workflows")


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/schedules", schedules_page)
    router.add_post("/schedules/{kind}/{id}/{action}", schedule_action)


async def schedules_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api, who = request.app[API], caller(request)
    jobs, more_jobs = await _all(api, who, _job_page)
    workflows, more_workflows = await _all(api, who, _workflow_page)
    return render(request, "schedules.html", title="Schedules", jobs=[j for j in jobs if j.cron],
                  workflows=[w for w in workflows if w.cron], capped=more_jobs or more_workflows,
                  looked_at=MAX_PAGES * 1000)


Page = Callable[[ConsoleApi, Caller, str], Awaitable[tuple[list[Any], str]]]


async def _all(api: ConsoleApi, who: Caller, page: Page) -> tuple[list[Any], bool]:
    """Up to MAX_PAGES pages; and whether more were left."""
    items: list[Any] = []
    token = ""
    for _ in range(MAX_PAGES):
        got, token = await page(api, who, token)
        items += got
        if not token:
            return items, False
    return items, True


async def _job_page(api: ConsoleApi, who: Caller, token: str) -> tuple[list[Job], str]:
    listed = await api.call(who, api.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=1000, page_token=token))
    return [Job.from_proto(j) for j in listed.jobs], listed.next_page_token


async def _workflow_page(api: ConsoleApi, who: Caller, token: str) -> tuple[list[Workflow], str]:
    listed = await api.call(who, api.workflows.ListWorkflows,
                            workflow_pb2.ListWorkflowsRequest(page_size=1000, page_token=token))
    return [Workflow.from_proto(w) for w in listed.workflows], listed.next_page_token


ACTIONS = ("pause", "resume", "trigger")


async def schedule_action(request: web.Request) -> web.StreamResponse:
    """Pauses, resumes or fires now the schedule of a job or workflow (named by id); back to the list, or to
    the run a firing started."""
    project_only(session_of(request))
    kind, target, action = (request.match_info[k] for k in ("kind", "id", "action"))
    if kind not in KINDS or action not in ACTIONS:
        raise web.HTTPNotFound(text="no such schedule action")
    api, who = request.app[API], caller(request)
    selector = {"id": target} if kind == "jobs" else {"workflow_id": target}
    if action == "pause":
        await api.call(who, api.schedules.PauseSchedule, schedule_pb2.PauseScheduleRequest(**selector))
    elif action == "resume":
        await api.call(who, api.schedules.ResumeSchedule, schedule_pb2.ResumeScheduleRequest(**selector))
    else:
        fired = await api.call(who, api.schedules.TriggerSchedule, schedule_pb2.TriggerScheduleRequest(**selector))
        raise web.HTTPSeeOther(f"/runs/{fired.run.id}" if kind == "jobs" else f"/workflow-runs/{fired.workflow_run.id}")
    raise web.HTTPSeeOther(f"/schedules#{kind[:-1]}-{target}")
