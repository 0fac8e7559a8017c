"""Workflows: the project's workflows, paged; one workflow with its definition's steps, its versions drawn as
graphs, and a form that starts a run with a JSON input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from strait_client._errors import InvalidArgumentError
from strait_client._workflow_models import Workflow, WorkflowVersion
from strait_client.v1 import workflow_pb2
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, query, render, session_of
from strait_server.console.workflow_views import definition_drawing, definition_steps, kind_of, target

PAGE_SIZE = 50
VERSIONS_PAGE_SIZE = 10
INPUT_FIELD = "input_json"


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/workflows", workflows_page)
    router.add_get("/workflows/{slug}", workflow_page)
    router.add_post("/workflows/{slug}/trigger", trigger)


async def workflows_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    listed = await api.call(caller(request), api.workflows.ListWorkflows, workflow_pb2.ListWorkflowsRequest(
        page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")))
    workflows = [Workflow.from_proto(w) for w in listed.workflows]
    next_page = query(request, page_token=listed.next_page_token) if listed.next_page_token else ""
    return render(request, "workflows.html", workflows=workflows, next_page=next_page, title="Workflows")


def _version(request: web.Request) -> int:
    """The version asked for (?version=N); 0, the current one, when none or not a number."""
    value = request.query.get("version", "")
    return int(value) if value.isdigit() else 0


def _step_link(slug: str, version: int) -> Callable[[str], str]:
    """Where a node of a version's drawing links: that step's row in the page of that version."""
    return lambda ref: f"/workflows/{slug}?version={version}#step-{ref}"


async def workflow_page(request: web.Request) -> web.StreamResponse:
    return await _workflow(request, _version(request))


async def _workflow(request: web.Request, version: int, http_status: int = 200, **form: Any) -> web.Response:
    """The workflow page at `version` (0: current); `form` refills the trigger form and says what was wrong."""
    project_only(session_of(request))
    api = request.app[API]
    slug = request.match_info["slug"]
    who = caller(request)
    got = await api.call(who, api.workflows.GetWorkflow, workflow_pb2.GetWorkflowRequest(slug=slug, version=version))
    current = got.workflow.version if not version else (await api.call(
        who, api.workflows.GetWorkflow, workflow_pb2.GetWorkflowRequest(slug=slug))).workflow.version
    workflow = Workflow.from_proto(got.workflow)
    listed = await api.call(who, api.workflows.ListWorkflowVersions, workflow_pb2.ListWorkflowVersionsRequest(
        slug=slug, page_size=VERSIONS_PAGE_SIZE, page_token=request.query.get("versions_page", "")))
    versions = [WorkflowVersion.from_proto(v) for v in listed.versions]
    drawings = {v.version: definition_drawing(v.workflow, f"version-{v.version}", _step_link(slug, v.version))
                for v in versions}
    next_versions = query(request, versions_page=listed.next_page_token) if listed.next_page_token else ""
    return render(request, "workflow.html", http_status=http_status, workflow=workflow, current=current,
                  steps=definition_steps(workflow), kind_of=kind_of, target=target, versions=versions,
                  drawings=drawings, next_versions=next_versions, input_json=form.get("input_json", "{}"),
                  input_problem=form.get("input_problem", ""), other_problems=form.get("other_problems", []),
                  title=f"Workflow {workflow.slug}")


async def trigger(request: web.Request) -> web.StreamResponse:
    """Starts a run of the workflow (of the version the page showed) and goes to it; a refused input comes
    back in the form with the API's reason next to it."""
    project_only(session_of(request))
    api = request.app[API]
    form = await request.post()
    input_json = str(form.get(INPUT_FIELD, ""))
    version = int(str(form.get("version", "0"))) if str(form.get("version", "0")).isdigit() else 0
    try:
        triggered = await api.call(caller(request), api.workflows.TriggerWorkflow, workflow_pb2.TriggerWorkflowRequest(
            slug=request.match_info["slug"], input_json=input_json, version=version))
    except InvalidArgumentError as err:
        if not err.field_violations:
            raise
        mine = [problem for field, problem in err.field_violations if field == INPUT_FIELD]
        others = [f"{field}: {problem}" for field, problem in err.field_violations if field != INPUT_FIELD]
        return await _workflow(request, version, http_status=400, input_json=input_json,
                               input_problem="; ".join(mine), other_problems=others)
    raise web.HTTPSeeOther(f"/workflow-runs/{triggered.workflow_run.id}")
