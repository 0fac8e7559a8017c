"""Circuits and budget: the circuit breakers of the project's endpoints (state, failures in a row, open until,
the jobs that call each endpoint), reset by hand; and what the API says about the project's monthly budget
(the budget, its action and this month's spend, set with the admin key) and the jobs' per-run cost caps."""

from __future__ import annotations

from aiohttp import web

from strait_client._admin_models import EndpointCircuit, Project
from strait_client._models import Job
from strait_client.v1 import circuit_pb2, job_pb2, project_pb2
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, query, render, session_of

PAGE_SIZE = 100
STATE_TONES = {"closed": "ok", "open": "bad", "half_open": "busy"}


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/circuits", circuits_page)
    router.add_post("/circuits/reset", reset)


async def circuits_page(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    project_only(session)
    api, who = request.app[API], caller(request)
    listed = await api.call(who, api.circuits.ListEndpointCircuits, circuit_pb2.ListEndpointCircuitsRequest(
        page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")))
    circuits = [EndpointCircuit.from_proto(c) for c in listed.circuits]
    jobs = [Job.from_proto(j) for j in
            (await api.call(who, api.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=1000))).jobs]
    project = Project.from_proto((await api.call(who, api.projects.GetProject,
                                                 project_pb2.GetProjectRequest(id=session.project_id))).project)
    return render(request, "circuits.html", title="Circuits and budget", circuits=circuits,
                  callers=_callers(jobs), tones=STATE_TONES, project=project,
                  capped_jobs=[j for j in jobs if j.max_run_cost_microusd],
                  next_page=query(request, page_token=listed.next_page_token) if listed.next_page_token else "",
                  usd=usd)


def _callers(jobs: list[Job]) -> dict[str, list[str]]:
    """Endpoint URL -> the slugs of the jobs that call it (as primary or fallback endpoint)."""
    found: dict[str, list[str]] = {}
    for job in jobs:
        for url in {job.endpoint_url, job.fallback_endpoint_url} - {""}:
            found.setdefault(url, []).append(job.slug)
    return found


def usd(microusd: int | None) -> str:
    return "—" if microusd is None else f"${microusd / 1_000_000:,.2f}"


async def reset(request: web.Request) -> web.StreamResponse:
    """Closes an endpoint's circuit: the runs waiting for it are dispatched again."""
    project_only(session_of(request))
    api = request.app[API]
    url = str((await request.post()).get("endpoint_url", ""))
    await api.call(caller(request), api.circuits.ResetEndpointCircuit,
                   circuit_pb2.ResetEndpointCircuitRequest(endpoint_url=url))
    raise web.HTTPSeeOther("/circuits")
