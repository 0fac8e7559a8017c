"""The console's guarantees across pages: a project's key sees nothing of another project on any list page;
every action refuses a request without the session's CSRF token (or from another origin) and changes nothing;
the session cookie is HttpOnly and SameSite=Strict; a live page's stream carries keepalives, and when the
browser goes away the console closes its API stream."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from aiohttp import web

from strait_client.v1 import (
    circuit_pb2,
    circuit_pb2_grpc,
    job_pb2,
    project_pb2,
    run_pb2,
    worker_pb2,
    worker_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
    workflow_run_pb2,
    workflow_run_pb2_grpc,
)
from strait_server.app import App
from strait_server.config import Settings
from strait_server.console import pages
from strait_server.console import web as console_web
from strait_server.console.sessions import COOKIE
from tests.conftest import Api, AppFactory, connect, eventually
from tests.console.ops_data import circuit_listed, connected, seed
from tests.console.support import browserless
from tests.sink import Sink

# Pages that are not lists of the project's data (or not for a project key).
NOT_LISTS = ("/", "/signin", "/healthz", "/projects")
# Filtered lists worth browsing beside each list page's plain form.
FILTERED = ("/runs?status=dead_letter", "/runs?status=queued")


def console_routes() -> web.UrlDispatcher:
    router = web.UrlDispatcher()
    pages.register(router)
    return router


def list_pages() -> list[str]:
    """Every page of the console without a parameter in its path, as the router serves them (so pages added
    later are browsed too)."""
    paths = {route.resource.canonical for route in console_routes().routes()
             if route.method == "GET" and route.resource is not None}
    return [*sorted(p for p in paths if "{" not in p and p not in NOT_LISTS and not p.startswith("/live/")),
            *FILTERED]


def action_paths(fill: dict[str, str]) -> list[str]:
    """Every POST route of the pages, its path parameters filled from `fill` (else "x")."""
    out = []
    for route in console_routes().routes():
        if route.method == "POST" and route.resource is not None:
            out.append(re.sub(r"\{(\w+)\}", lambda m: fill.get(m.group(1), "x"), route.resource.canonical))
    return out


async def test_a_project_key_sees_nothing_of_another_project_on_any_list_page(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    mine, theirs = await connect(app, settings.admin_key), await connect(app, settings.admin_key)
    try:
        ours, others = await seed(app, mine, sink, "alpha"), await seed(app, theirs, sink, "bravo")
        await circuit_listed(mine, ours.failing_url)
        await circuit_listed(theirs, others.failing_url)
        browsed = list_pages()
        assert {"/overview", "/runs", "/dead-letter", "/jobs", "/schedules", "/circuits", "/workflows",
                "/workflow-runs", "/workers"} <= set(browsed)  # every page of the navigation
        async with connected(ours), connected(others), browserless(app) as b:
            await b.sign_in(mine.key)
            everything = ""
            for path in browsed:
                status, page = await b.get(path)
                assert status == 200, (path, page[:300])
                assert not {name for name in others.names if name in page}, path
                everything += page
            assert not {name for name in ours.shown if name not in everything}  # the pages do list data
    finally:
        await mine.channel.close()
        await theirs.channel.close()


async def test_every_action_needs_the_csrf_token_and_changes_nothing_without_it(
        make_app: AppFactory, settings: Settings, sink: Sink) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    flows = workflow_pb2_grpc.WorkflowServiceStub(api.channel)
    circuits = circuit_pb2_grpc.EndpointCircuitServiceStub(api.channel)
    workers = worker_pb2_grpc.WorkerServiceStub(api.channel)
    try:
        ours = await seed(app, api, sink, "alpha")
        await circuit_listed(api, ours.failing_url)
        [project] = (await api.projects.ListProjects(project_pb2.ListProjectsRequest(),
                                                     metadata=api.metadata)).projects
        keys = (await api.projects.ListApiKeys(project_pb2.ListApiKeysRequest(), metadata=api.metadata)).api_keys
        runs_before, flows_before = await _run_ids(api), await _workflow_runs(api)
        async with connected(ours) as session_id, browserless(app) as member, browserless(app) as admin:
            await member.sign_in(api.key)
            await admin.sign_in(settings.admin_key)
            fill = {"id": ours.job_id, "kind": "jobs", "action": "pause", "key": keys[0].id,
                    "job": ours.job_slug, "slug": ours.workflow_slug}
            targets = [*action_paths(fill), f"/schedules/workflows/{ours.workflow_id}/pause",
                       f"/schedules/jobs/{ours.job_id}/trigger", f"/workers/{session_id}/drain",
                       f"/runs/{ours.dead_run_id}/replay", f"/workflow-runs/{ours.workflow_run_id}/cancel",
                       f"/workflow-runs/{ours.workflow_run_id}/steps/gate/approve",
                       f"/projects/{project.id}/keys", f"/projects/{project.id}/keys/{keys[0].id}/revoke",
                       "/signout"]
            assert {"/circuits/reset", "/projects", "/signout"} <= set(targets)
            for b in (member, admin):
                token = await b.csrf("/workers" if b is member else "/projects")
                form = {"endpoint_url": ours.failing_url, "slug": "sneaky", "name": "sneaky", "workers": "1",
                        "enabled": "false", "one": ours.dead_run_id, "payload": "{}"}
                for path in targets:
                    refused = [await b.post(path, form), await b.post(path, {**form, "csrf_token": "forged"}),
                               await b.post(path, {**form, "csrf_token": token},
                                            headers={"Origin": "https://elsewhere.example"})]
                    assert [status for status, _, _ in refused] == [403, 403, 403], path

            # Nothing changed.
            job = (await api.jobs.GetJob(job_pb2.GetJobRequest(id=ours.job_id), metadata=api.metadata)).job
            workflow = (await flows.GetWorkflow(workflow_pb2.GetWorkflowRequest(id=ours.workflow_id),
                                                metadata=api.metadata)).workflow
            assert not job.schedule_paused and not workflow.schedule_paused and job.enabled
            assert await _run_ids(api) == runs_before  # no run fired or replayed
            assert await _workflow_runs(api) == flows_before  # none started, canceled or paused
            listed = await circuits.ListEndpointCircuits(circuit_pb2.ListEndpointCircuitsRequest(),
                                                         metadata=api.metadata)
            assert [c.endpoint_url for c in listed.circuits] == [ours.failing_url]
            worker = await workers.GetWorker(worker_pb2.GetWorkerRequest(id=session_id), metadata=api.metadata)
            assert not worker.worker.draining
            after = (await api.projects.ListApiKeys(project_pb2.ListApiKeysRequest(), metadata=api.metadata)).api_keys
            assert list(after) == list(keys)  # none created, none revoked
            projects = await api.projects.ListProjects(project_pb2.ListProjectsRequest(), metadata=api.admin_metadata)
            assert "sneaky" not in [p.slug for p in projects.projects]
            for b in (member, admin):  # still signed in: sign-out was refused too
                status, _ = await b.get("/workers" if b is member else "/projects")
                assert status == 200
    finally:
        await api.channel.close()


async def _workflow_runs(api: Api) -> list[tuple[str, int]]:
    stub = workflow_run_pb2_grpc.WorkflowRunServiceStub(api.channel)
    listed = await stub.ListWorkflowRuns(workflow_run_pb2.ListWorkflowRunsRequest(), metadata=api.metadata)
    return [(r.id, r.status) for r in listed.workflow_runs]


async def _run_ids(api: Api) -> list[str]:
    listed = await api.runs.ListRuns(run_pb2.ListRunsRequest(page_size=1000), metadata=api.metadata)
    return [r.id for r in listed.runs]


async def test_the_session_cookie_is_http_only_and_same_site_strict(make_app: AppFactory,
                                                                     settings: Settings) -> None:
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        async with browserless(app) as b:
            token = await b.csrf("/signin")
            async with b.http.post(b.base + "/signin", data={"csrf_token": token, "api_key": api.key},
                                   headers={"Origin": b.base}, allow_redirects=False) as response:
                assert response.status == 303
                [cookie] = [c for c in response.headers.getall("Set-Cookie") if c.startswith(COOKIE + "=")]
            attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
            assert {"httponly", "samesite", "path"} <= attributes and "SameSite=Strict" in cookie
    finally:
        await api.channel.close()


def _watch_streams(app: App) -> float:
    return app.telemetry.metrics.registry.get_sample_value("strait_watch_streams") or 0.0


async def test_a_live_page_gets_keepalives_and_its_api_stream_ends_with_the_browser(
        make_app: AppFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(console_web, "KEEPALIVE_S", 0.3)
    app = await make_app(console_address="127.0.0.1:0")
    api = await connect(app, settings.admin_key)
    try:
        async with browserless(app) as b:
            await b.sign_in(api.key)
            response = await b.http.get(b.base + "/live/runs", headers={"Accept": "text/event-stream"})
            assert response.status == 200 and response.content_type == "text/event-stream"
            # Nothing happens in the project: the first thing the page gets is a keepalive comment, in time.
            assert await asyncio.wait_for(response.content.readline(), 5) == b": keepalive\n"
            assert await asyncio.wait_for(response.content.readline(), 5) == b"\n"
            assert await asyncio.wait_for(response.content.readline(), 5) == b": keepalive\n"

            async def watching(count: float) -> bool:
                return _watch_streams(app) == count
            await eventually(lambda: watching(1))
            response.close()  # the browser leaves
            await eventually(lambda: watching(0), timeout=10)
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]  # it ended cleanly
    finally:
        await api.channel.close()
