"""One step of a workflow run: its status, input, output and error, its job run, its definition, a map step's
instances (paged), and what can be done to it: approve or reject, complete with an output, skip, retry, or
replay it with everything after it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from strait_client._errors import NotFoundError
from strait_client._models import Run
from strait_client._steps import Step
from strait_client._workflow_models import Workflow
from strait_client._workflow_run_models import StepRun, WorkflowRun
from strait_client.v1 import run_pb2, workflow_pb2, workflow_run_pb2
from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, query, render, session_of
from strait_server.console.workflow_views import counts, definition_steps, kind_of, target

R = workflow_run_pb2
INSTANCES_PAGE_SIZE = 50
OPEN = frozenset({"pending", "running", "waiting"})  # may be completed or skipped by hand
RETRYABLE = frozenset({"failed", "canceled"})
ENDED = frozenset({"completed", "failed", "skipped", "canceled"})  # may be replayed with what follows


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/workflow-runs/{id}/steps/{ref}", step_page)
    for name in ACTIONS:
        router.add_post(f"/workflow-runs/{{id}}/steps/{{ref}}/{name}", act)


async def _instances(api: ConsoleApi, who: Caller, run_id: str, ref: str,
                     page_token: str) -> tuple[StepRun, list[StepRun], str]:
    """The step, a page of its map instances, and the next page's token. The API lists the step first, then its
    instances in item order."""
    listing = R.ListStepRunsRequest(workflow_run_id=run_id, step_ref=ref, page_token=page_token,
                                    page_size=INSTANCES_PAGE_SIZE + (0 if page_token else 1))
    listed = await api.call(who, api.workflow_runs.ListStepRuns, listing)
    rows = [StepRun.from_proto(s) for s in listed.step_runs]
    if page_token:
        first = await api.call(who, api.workflow_runs.ListStepRuns, R.ListStepRunsRequest(
            workflow_run_id=run_id, step_ref=ref, page_size=1))
        rows = [StepRun.from_proto(s) for s in first.step_runs[:1]] + rows
    if not rows or rows[0].map_index != -1:
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"workflow run {run_id} has no step {ref!r}")
    return rows[0], rows[1:], listed.next_page_token


async def _definition(api: ConsoleApi, who: Caller, run: WorkflowRun, ref: str) -> tuple[str, Step | None]:
    """The workflow's slug and the step's definition in the version the run runs (none once it is deleted)."""
    try:
        got = await api.call(who, api.workflows.GetWorkflow,
                             workflow_pb2.GetWorkflowRequest(id=run.workflow_id, version=run.version))
    except NotFoundError:
        return "", None
    steps = definition_steps(Workflow.from_proto(got.workflow))
    return got.workflow.slug, next((s for s, _ in steps if s.ref == ref), None)


async def _input(api: ConsoleApi, who: Caller, step: StepRun) -> Any:
    """A job step's input: the payload of its job run (None without one, or once it is purged)."""
    if not step.job_run_id:
        return None
    try:
        got = await api.call(who, api.runs.GetRun, run_pb2.GetRunRequest(id=step.job_run_id))
    except NotFoundError:
        return None
    return Run.from_proto(got.run).payload


async def step_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    who = caller(request)
    run_id, ref = request.match_info["id"], request.match_info["ref"]
    got = await api.call(who, api.workflow_runs.GetWorkflowRun, R.GetWorkflowRunRequest(id=run_id))
    run = WorkflowRun.from_proto(got.workflow_run)
    step, instances, token = await _instances(api, who, run_id, ref, request.query.get("page_token", ""))
    slug, definition = await _definition(api, who, run, ref)
    payload = await _input(api, who, step)
    status = str(step.status or "")
    reopenable = run.status != "canceled"  # a retry or replay opens an ended run again, unless it was canceled
    return render(request, "workflow_step.html", run=run, step=step, instances=instances, slug=slug,
                  definition=definition, kind_of=kind_of, target=target, counts=counts, payload=payload,
                  next_page=query(request, page_token=token) if token else "",
                  can_decide=status == "waiting" and step.waiting_reason == "approval", can_end=status in OPEN,
                  can_retry=reopenable and status in RETRYABLE, can_replay=reopenable and status in ENDED,
                  run_open=not run.is_terminal,
                  title=f"Step {ref} of {run_id}")


Action = Callable[[ConsoleApi, Caller, str, str, str], Awaitable[Any]]


async def _approve(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.ApproveStep, R.ApproveStepRequest(id=run_id, step_ref=ref,
                                                                                  comment=text))


async def _reject(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.RejectStep, R.RejectStepRequest(id=run_id, step_ref=ref,
                                                                                reason=text))


async def _skip(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.SkipWorkflowStep, R.SkipWorkflowStepRequest(
        id=run_id, step_ref=ref, reason=text))


async def _complete(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.CompleteWorkflowStep, R.CompleteWorkflowStepRequest(
        id=run_id, step_ref=ref, output_json=text))


async def _retry(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.RetryWorkflowStep, R.RetryWorkflowStepRequest(
        id=run_id, step_ref=ref))


async def _replay(api: ConsoleApi, who: Caller, run_id: str, ref: str, text: str) -> Any:
    return await api.call(who, api.workflow_runs.ReplayWorkflowSubtree, R.ReplayWorkflowSubtreeRequest(
        id=run_id, step_ref=ref))


# The last path segment of each action's form -> the call it makes with the form's "text" (a comment, a
# reason, or the output as JSON).
ACTIONS: dict[str, Action] = {"approve": _approve, "reject": _reject, "skip": _skip, "complete": _complete,
                              "retry": _retry, "replay": _replay}


async def act(request: web.Request) -> web.StreamResponse:
    """One action on a step, then back to the page it came from (the run's, or the step's); a refusal is a
    page that says why."""
    project_only(session_of(request))
    api = request.app[API]
    run_id, ref = request.match_info["id"], request.match_info["ref"]
    action = ACTIONS[request.path.rsplit("/", 1)[1]]
    form = await request.post()
    await action(api, caller(request), run_id, ref, str(form.get("text", "")))
    back = str(form.get("next", ""))
    run_page = f"/workflow-runs/{run_id}"
    raise web.HTTPSeeOther(back if back in (run_page, f"{run_page}/steps/{ref}") else run_page)
