"""Runs: the project's runs, filtered and paged, live as they change; one run with its attempts and event
timeline, live; cancel and replay."""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client._enums import RunStatus
from strait_client._errors import InvalidArgumentError
from strait_client._models import Run, RunEvent
from strait_client.v1 import job_pb2, run_pb2
from strait_server.console.sessions import ConsoleSession
from strait_server.console.web import API, EventStream, caller, fragment, query, render, session_of, with_keepalive

PAGE_SIZE = 50
# A live list keeps this many of its newest rows (console.js drops older ones): an open page stays the same size.
LIVE_ROWS = 200
# The runs list's time filter: created within the last ...
CREATED_WITHIN = {"1h": ("the last hour", 3600), "24h": ("the last 24 hours", 86400), "7d": ("the last 7 days", 604800)}
STATUS_VALUES = {s.value: getattr(run_pb2, f"RUN_STATUS_{s.name}") for s in RunStatus}


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/runs", runs_page)
    router.add_get("/runs/{id}", run_page)
    router.add_post("/runs/{id}/cancel", cancel)
    router.add_post("/runs/{id}/replay", replay)
    router.add_get("/live/runs", live_runs)
    router.add_get("/live/runs/{id}", live_run)


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/projects" if session_of(request).is_admin else "/runs")


def project_only(session: ConsoleSession) -> None:
    if session.is_admin:
        raise web.HTTPSeeOther("/projects")


def tag_filter(request: web.Request) -> dict[str, str]:
    """The tags filter: KEY=VALUE pairs, separated by commas or spaces."""
    tags: dict[str, str] = {}
    for pair in re.split(r"[,\s]+", request.query.get("tags", "").strip()):
        key, sep, value = pair.partition("=")
        if pair and (not sep or not key):
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"the tags filter takes KEY=VALUE pairs; {pair!r} is not one")
        if pair:
            tags[key] = value
    return tags


async def job_slugs(request: web.Request) -> dict[str, str]:
    """Job id -> slug, of the project's first 1,000 jobs (for filters and for naming runs' jobs)."""
    api = request.app[API]
    listed = await api.call(caller(request), api.jobs.ListJobs, job_pb2.ListJobsRequest(page_size=1000))
    return {j.id: j.slug for j in listed.jobs}


async def runs_page(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    project_only(session)
    api = request.app[API]
    slugs = await job_slugs(request)
    job = request.query.get("job", "")
    status = request.query.get("status", "")
    job_id = next((i for i, s in slugs.items() if s == job or i == job), job)
    created = request.query.get("created", "")
    tags = tag_filter(request)
    after = Timestamp(seconds=int(time.time()) - CREATED_WITHIN[created][1]) if created in CREATED_WITHIN else None
    listed = await api.call(caller(request), api.runs.ListRuns, run_pb2.ListRunsRequest(
        job_id=job_id, statuses=[STATUS_VALUES[status]] if status in STATUS_VALUES else [], page_size=PAGE_SIZE,
        create_time_after=after, tags=tags, page_token=request.query.get("page_token", "")))
    runs = [Run.from_proto(r) for r in listed.runs]
    first_page = not request.query.get("page_token")
    # The live rows start after the newest row shown (in microseconds): runs created after it, and before the
    # feed opens, are listed when it opens, and none of the rows shown comes twice.
    newest = max((r.create_time for r in runs if r.create_time), default=None)
    since = (int(newest.timestamp()) * 1_000_000 + newest.microsecond) if newest else int((time.time() - 1) * 1e6)
    live = "/live/runs?" + query(request, page_token="", since=str(since)) if first_page else ""
    return render(request, "runs.html", runs=runs, slugs=slugs, job=job, status=status, created=created,
                  tags=request.query.get("tags", "").strip(),
                  created_choices=[(k, label) for k, (label, _) in CREATED_WITHIN.items()],
                  statuses=[s.value for s in RunStatus], next_page=query(request, page_token=listed.next_page_token)
                  if listed.next_page_token else "", live=live, keep=LIVE_ROWS, title="Runs")


async def run_page(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    project_only(session)
    api = request.app[API]
    run_id = request.match_info["id"]
    run = Run.from_proto((await api.call(caller(request), api.runs.GetRun, run_pb2.GetRunRequest(id=run_id))).run)
    listed = await api.call(caller(request), api.runs.ListRunEvents,
                            run_pb2.ListRunEventsRequest(run_id=run_id, page_size=1000))
    events = [RunEvent.from_proto(e) for e in listed.events]
    slugs = await job_slugs(request)
    after = events[-1].sequence if events else 0
    return render(request, "run.html", run=run, events=events, slug=slugs.get(run.job_id, run.job_id),
                  live=f"/live/runs/{run.id}?after={after}", progress=_progress(events), title=f"Run {run.id}")


def _progress(events: list[RunEvent]) -> float | None:
    reported = [e.data.get("percent") for e in events if e.type == "progress" and isinstance(e.data, dict)]
    return float(reported[-1]) if reported and reported[-1] is not None else None


async def cancel(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    run_id = request.match_info["id"]
    await api.call(caller(request), api.runs.CancelRun,
                   run_pb2.CancelRunRequest(id=run_id, reason="canceled in the console"))
    raise web.HTTPSeeOther(f"/runs/{run_id}")


async def replay(request: web.Request) -> web.StreamResponse:
    api = request.app[API]
    replayed = await api.call(caller(request), api.runs.ReplayRun,
                              run_pb2.ReplayRunRequest(id=request.match_info["id"]))
    raise web.HTTPSeeOther(f"/runs/{replayed.run.id}")


async def live_runs(request: web.Request) -> web.StreamResponse:
    """The project feed's status changes as table rows: a new run's row (prepended), an existing row's
    replacement (swapped out of band by its id)."""
    session = session_of(request)
    project_only(session)
    api = request.app[API]
    slugs = await job_slugs(request)
    job = request.query.get("job", "")
    status = request.query.get("status", "")
    job_id = next((i for i, s in slugs.items() if s == job or i == job), job)
    wanted = [STATUS_VALUES[status]] if status in STATUS_VALUES else []
    tags = tag_filter(request)
    stream = await EventStream.open(request)
    # Rows the catch-up added: their first live event (if the feed has it too) must not add them again. Only
    # these are kept, so that a page left open does not grow with every run it sees.
    shown: set[str] = set()

    async def catch_up() -> None:
        """The runs created since the page was rendered, up to the feed's position."""
        raw, since = request.query.get("since", ""), Timestamp()
        since.FromMicroseconds(int(raw) if raw.isdigit() else 0)
        listed = await api.call(caller(request), api.runs.ListRuns, run_pb2.ListRunsRequest(
            job_id=job_id, statuses=wanted, create_time_after=since, tags=tags, page_size=PAGE_SIZE))
        for run in reversed([Run.from_proto(r) for r in listed.runs]):
            shown.add(run.id)
            row = {"id": run.id, "job": slugs.get(run.job_id, run.job_id), "status": run.status,
                   "attempt": run.attempt, "time": run.create_time}
            await stream.send("run", fragment(request, "run_row.html", row=row, fresh=True))

    token = ""  # the feed's position, to resume from when the API ends the stream at its maximum duration
    feed = api.followed(caller(request), api.runs.WatchRuns, lambda: run_pb2.WatchRunsRequest(
        job_id=job_id, statuses=wanted, tags=tags, resume_token=token), opened=catch_up)
    try:
        async for message in with_keepalive(stream, feed):
            token = message.resume_token or token
            if message.WhichOneof("message") != "event" or message.event.type != "status_change":
                continue
            event = RunEvent.from_proto(message.event)
            fresh = event.from_status is None and event.run_id not in shown
            html = fragment(request, "run_row.html", row=_row(event, slugs), fresh=fresh)
            await stream.send("run", html)
    except (ConnectionResetError, ConnectionError):
        pass  # the viewer went away
    return stream.response


def _row(event: RunEvent, slugs: dict[str, str]) -> dict[str, Any]:
    return {"id": event.run_id, "job": slugs.get(event.job_id, event.job_id), "status": event.to_status,
            "attempt": event.attempt, "time": event.create_time}


async def live_run(request: web.Request) -> web.StreamResponse:
    """One run's events after the page's last one, as timeline entries, and its status as it changes."""
    session = session_of(request)
    project_only(session)
    api = request.app[API]
    run_id = request.match_info["id"]
    after = int(request.query.get("after", "0") or 0)
    stream = await EventStream.open(request)

    async def unfinished() -> bool:
        got = await api.call(caller(request), api.runs.GetRun, run_pb2.GetRunRequest(id=run_id))
        return not Run.from_proto(got.run).is_terminal

    watch = api.followed(caller(request), api.runs.WatchRun,
                         lambda: run_pb2.WatchRunRequest(run_id=run_id, after_sequence=after), goes_on=unfinished)
    try:
        async for message in with_keepalive(stream, watch):
            if message.WhichOneof("message") != "event":
                continue
            after = max(after, message.event.sequence)
            event = RunEvent.from_proto(message.event)
            html = fragment(request, "run_event.html", event=event)
            if event.type == "status_change":  # the summary (status, attempts, output) as it is now
                got = await api.call(caller(request), api.runs.GetRun, run_pb2.GetRunRequest(id=run_id))
                run = Run.from_proto(got.run)
                html += fragment(request, "run_summary.html", run=run, oob=True)
            if event.type == "progress" and isinstance(event.data, dict):
                html += fragment(request, "run_progress.html", progress=event.data.get("percent"), oob=True)
            await stream.send("event", html)
    except (ConnectionResetError, ConnectionError):
        pass
    return stream.response
