"""Workflow runs: the project's runs, filtered by workflow and status and paged; one run with its input, its
steps drawn as a graph coloured by status, its steps table and the approvals it waits for, all live while it
runs; pause, resume and cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web

from strait_client._enums import WorkflowRunStatus
from strait_client._errors import NotFoundError, StraitError
from strait_client._workflow_run_models import StepRun, WorkflowRun, WorkflowRunGraph
from strait_client.v1 import workflow_pb2, workflow_run_pb2
from strait_server.console import graph
from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.pages.runs import LIVE_ROWS, project_only
from strait_server.console.throttle import coalesced
from strait_server.console.web import API, EventStream, caller, fragment, query, render, session_of, with_keepalive
from strait_server.console.workflow_views import counts, run_drawing, run_layout

R = workflow_run_pb2
PAGE_SIZE = 50
STEPS_PAGE_SIZE = 100
EVENTS_PAGE_SIZE = 1000
REDRAW_INTERVAL_S = 0.3  # a live run page redraws at most about three times a second
STATUS_VALUES = {s.value: getattr(R, f"WORKFLOW_RUN_STATUS_{s.name}") for s in WorkflowRunStatus}


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/workflow-runs", workflow_runs_page)
    router.add_get("/workflow-runs/{id}", workflow_run_page)
    router.add_post("/workflow-runs/{id}/cancel", cancel)
    router.add_post("/workflow-runs/{id}/pause", pause)
    router.add_post("/workflow-runs/{id}/resume", resume)
    router.add_get("/live/workflow-runs", live_workflow_runs)
    router.add_get("/live/workflow-runs/{id}", live_workflow_run)


async def workflow_slugs(api: ConsoleApi, who: Caller) -> dict[str, str]:
    """Workflow id -> slug, of the project's first page of workflows (for the filter and for naming runs)."""
    listed = await api.call(who, api.workflows.ListWorkflows, workflow_pb2.ListWorkflowsRequest(page_size=1000))
    return {w.id: w.slug for w in listed.workflows}


async def workflow_slug(api: ConsoleApi, who: Caller, workflow_id: str, version: int = 0) -> str:
    """The slug of a workflow by id; empty when it was deleted."""
    try:
        got = await api.call(who, api.workflows.GetWorkflow,
                             workflow_pb2.GetWorkflowRequest(id=workflow_id, version=version))
    except NotFoundError:
        return ""
    return str(got.workflow.slug)


class RunFilters:
    """The list's filters from the query string: a workflow (slug) and a status."""

    def __init__(self, request: web.Request) -> None:
        self.workflow = request.query.get("workflow", "")
        self.status = request.query.get("status", "")
        self.slugs: dict[str, str] = {}  # workflow id -> slug
        self.workflow_id = ""

    async def resolve(self, api: ConsoleApi, who: Caller) -> None:
        """The workflows' slugs, and the filtered workflow's id (NOT_FOUND for an unknown slug)."""
        self.slugs = await workflow_slugs(api, who)
        self.workflow_id = next((i for i, s in self.slugs.items() if self.workflow in (s, i)), "")
        if self.workflow and not self.workflow_id:  # not on the first page of workflows: ask for it by slug
            got = await api.call(who, api.workflows.GetWorkflow, workflow_pb2.GetWorkflowRequest(slug=self.workflow))
            self.workflow_id = got.workflow.id
            self.slugs[self.workflow_id] = got.workflow.slug

    async def page(self, api: ConsoleApi, who: Caller, page_token: str = "") -> tuple[list[WorkflowRun], str]:
        """A page of the runs, newest first, and the next page's token; the runs' workflows get slugs."""
        listed = await api.call(who, api.workflow_runs.ListWorkflowRuns, R.ListWorkflowRunsRequest(
            workflow_id=self.workflow_id,
            statuses=[STATUS_VALUES[self.status]] if self.status in STATUS_VALUES else [],
            page_size=PAGE_SIZE, page_token=page_token))
        runs = [WorkflowRun.from_proto(r) for r in listed.workflow_runs]
        missing = list({r.workflow_id for r in runs} - set(self.slugs))
        found = await asyncio.gather(*(workflow_slug(api, who, i) for i in missing))
        self.slugs.update(zip(missing, found, strict=True))
        return runs, listed.next_page_token


async def workflow_runs_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    who = caller(request)
    filters = RunFilters(request)
    await filters.resolve(api, who)
    page_token = request.query.get("page_token", "")
    runs, token = await filters.page(api, who, page_token)
    # The live rows start after the newest row shown (in microseconds), as in the runs list.
    newest = max((_micros(r.create_time) for r in runs), default=int((time.time() - 1) * 1e6))
    live = "/live/workflow-runs?" + query(request, page_token="", since=str(newest)) if not page_token else ""
    return render(request, "workflow_runs.html", runs=runs, slugs=filters.slugs, workflow=filters.workflow,
                  status=filters.status, statuses=[s.value for s in WorkflowRunStatus], live=live, keep=LIVE_ROWS,
                  next_page=query(request, page_token=token) if token else "", title="Workflow runs")


def _micros(value: datetime | None) -> int:
    return int(value.timestamp()) * 1_000_000 + value.microsecond if value else 0


async def live_workflow_runs(request: web.Request) -> web.StreamResponse:
    """The project's workflow runs as they are created (rows prepended) and change status (rows swapped by id),
    from WatchWorkflowRuns."""
    project_only(session_of(request))
    api = request.app[API]
    who = caller(request)
    filters = RunFilters(request)
    await filters.resolve(api, who)
    stream = await EventStream.open(request)
    shown: set[str] = set()  # rows the catch-up sent: their creation, if the feed has it too, is not added again

    def row(run: WorkflowRun, fresh: bool) -> str:
        return fragment(request, "workflow_run_row.html", run=run, slugs=filters.slugs, fresh=fresh)

    async def catch_up() -> None:
        """What changed between the page's rendering and the feed's start, from the first page read again:
        runs created after the page's newest row are added, the others swapped in place (a swap of a row the
        page does not show does nothing)."""
        raw = request.query.get("since", "")
        since = int(raw) if raw.isdigit() else 0
        runs, _ = await filters.page(api, who)
        for run in reversed(runs):
            shown.add(run.id)
            await stream.send("run", row(run, fresh=_micros(run.create_time) > since))

    token = ""  # the feed's position, to resume from when the API ends the stream at its maximum duration
    feed = api.followed(who, api.workflow_runs.WatchWorkflowRuns, lambda: R.WatchWorkflowRunsRequest(
        workflow_id=filters.workflow_id, resume_token=token), opened=catch_up)
    try:
        async for message in with_keepalive(stream, feed):
            token = message.resume_token or token
            if message.WhichOneof("message") != "event":
                continue
            event = message.event
            if filters.status and event.to_status != filters.status:
                continue
            try:
                got = await api.call(who, api.workflow_runs.GetWorkflowRun,
                                     R.GetWorkflowRunRequest(id=event.workflow_run_id))
            except NotFoundError:
                continue  # deleted with its workflow meanwhile
            run = WorkflowRun.from_proto(got.workflow_run)
            if run.workflow_id not in filters.slugs:
                filters.slugs[run.workflow_id] = await workflow_slug(api, who, run.workflow_id)
            fresh = not event.from_status and run.id not in shown
            await stream.send("run", row(run, fresh=fresh))
    except (ConnectionResetError, ConnectionError):
        pass  # the viewer went away
    return stream.response


async def last_sequence(api: ConsoleApi, who: Caller, run_id: str) -> int:
    """The sequence of the run's latest event: a live view follows the run from there."""
    after = 0
    while True:
        page = await api.call(who, api.workflow_runs.ListWorkflowRunEvents, R.ListWorkflowRunEventsRequest(
            workflow_run_id=run_id, after_sequence=after, page_size=EVENTS_PAGE_SIZE))
        if page.events:
            after = page.events[-1].sequence
        if len(page.events) < EVENTS_PAGE_SIZE:
            return after


def _steps_from(request: web.Request) -> int:
    value = request.query.get("steps_from", "")
    return int(value) if value.isdigit() else 0


class RunView:
    """What a run page shows of the run as it is now, as fragments that a live view can swap in by id."""

    def __init__(self, request: web.Request, run_id: str, steps_from: int) -> None:
        self.request = request
        self.run_id = run_id
        self.steps_from = steps_from
        self.plan: graph.Layout | None = None  # the steps never change during a run: laid out once
        self.run: WorkflowRun | None = None

    async def read(self) -> dict[str, Any]:
        api = self.request.app[API]
        who = caller(self.request)
        got, drawn, listed = await asyncio.gather(
            api.call(who, api.workflow_runs.GetWorkflowRun, R.GetWorkflowRunRequest(id=self.run_id)),
            api.call(who, api.workflow_runs.GetWorkflowRunGraph, R.GetWorkflowRunGraphRequest(id=self.run_id)),
            api.call(who, api.workflow_runs.ListStepRuns, R.ListStepRunsRequest(workflow_run_id=self.run_id)))
        self.run = WorkflowRun.from_proto(got.workflow_run)
        run_graph = WorkflowRunGraph.from_proto(drawn.graph)
        if self.plan is None:
            self.plan = run_layout(run_graph)
        steps = [StepRun.from_proto(s) for s in listed.step_runs]
        kinds = {n.step_ref: n.kind for n in run_graph.nodes}
        shown = steps[self.steps_from:self.steps_from + STEPS_PAGE_SIZE]
        return {"run": self.run, "drawing": run_drawing(run_graph, self.plan), "steps": shown, "kinds": kinds,
                "counts": counts, "total_steps": len(steps), "steps_from": self.steps_from,
                "steps_page": STEPS_PAGE_SIZE,
                "approvals": [s for s in steps if s.status == "waiting" and s.waiting_reason == "approval"]}

    def fragments(self, context: dict[str, Any]) -> dict[str, str]:
        """Each part of the page that changes, rendered to swap in out of band (by its id)."""
        return {name: fragment(self.request, f"workflow_run_{name}.html", oob=True, **context)
                for name in ("summary", "graph", "approvals", "steps")}

    @property
    def ended(self) -> bool:
        return self.run is not None and self.run.is_terminal


async def workflow_run_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    who = caller(request)
    run_id = request.match_info["id"]
    after = await last_sequence(api, who, run_id)  # first: what the page shows reflects at least this
    view = RunView(request, run_id, _steps_from(request))
    context = await view.read()
    run = context["run"]
    slug = await workflow_slug(api, who, run.workflow_id, run.version)
    live = "" if view.ended else (f"/live/workflow-runs/{run_id}?"
                                  + query(request, after=str(after), steps_from=str(view.steps_from)))
    return render(request, "workflow_run.html", slug=slug, live=live, oob=False, title=f"Workflow run {run_id}",
                  **context)


async def _changes(request: web.Request, run_id: str, after: int) -> AsyncIterator[None]:
    """The run's events and map counts after sequence `after` (keepalives change nothing), followed past the API's
    maximum stream duration while the run has not ended."""
    api = request.app[API]
    who = caller(request)

    async def unfinished() -> bool:
        got = await api.call(who, api.workflow_runs.GetWorkflowRun, R.GetWorkflowRunRequest(id=run_id))
        return not WorkflowRun.from_proto(got.workflow_run).is_terminal

    watch = api.followed(who, api.workflow_runs.WatchWorkflowRun, lambda: R.WatchWorkflowRunRequest(
        workflow_run_id=run_id, after_sequence=after), goes_on=unfinished)
    async for message in watch:
        kind = message.WhichOneof("message")
        if kind == "event":
            after = max(after, message.event.sequence)
        if kind in ("event", "map_progress"):
            yield None


async def live_workflow_run(request: web.Request) -> web.StreamResponse:
    """The run page's parts redrawn as the run changes (WatchWorkflowRun after the page's last event), each
    sent only when it changed, at most a few times a second; then "end" once the run has ended, which closes
    the page's event source."""
    project_only(session_of(request))
    api = request.app[API]
    run_id = request.match_info["id"]
    raw = request.query.get("after", "0")
    after = int(raw) if raw.isdigit() else 0
    view = RunView(request, run_id, _steps_from(request))
    await api.call(caller(request), api.workflow_runs.GetWorkflowRun, R.GetWorkflowRunRequest(id=run_id))  # 404
    stream = await EventStream.open(request)
    sent: dict[str, str] = {}
    try:
        async for finished in with_keepalive(stream, coalesced(_changes(request, run_id, after), REDRAW_INTERVAL_S)):
            parts = view.fragments(await view.read())
            changed = "".join(html for name, html in parts.items() if sent.get(name) != html)
            sent.update(parts)
            if changed:
                await stream.send("refresh", changed)
            if finished:
                break
        if view.ended:
            await stream.send("end", "")
    except (ConnectionResetError, ConnectionError):
        pass  # the viewer went away
    except StraitError:
        pass  # the run can no longer be read with this key: the page's next load says why
    return stream.response


async def cancel(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    run_id = request.match_info["id"]
    await api.call(caller(request), api.workflow_runs.CancelWorkflowRun,
                   R.CancelWorkflowRunRequest(id=run_id, reason="canceled in the console"))
    raise web.HTTPSeeOther(f"/workflow-runs/{run_id}")


async def pause(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    run_id = request.match_info["id"]
    await api.call(caller(request), api.workflow_runs.PauseWorkflowRun, R.PauseWorkflowRunRequest(id=run_id))
    raise web.HTTPSeeOther(f"/workflow-runs/{run_id}")


async def resume(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    run_id = request.match_info["id"]
    await api.call(caller(request), api.workflow_runs.ResumeWorkflowRun, R.ResumeWorkflowRunRequest(id=run_id))
    raise web.HTTPSeeOther(f"/workflow-runs/{run_id}")
