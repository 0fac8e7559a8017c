"""Overview: the project's last hour (runs created per 5 minutes by how they ended, waits to start, attempt
durations) and its unfinished runs per job, as small SVG charts with the figures as tables.

Every figure comes from runs the API lists for the signed-in key, read within fixed bounds so the page costs
the same however busy the project is. The server's Prometheus metrics are not used: they count what one
process did since it started, for every project at once (only the dispatch histogram names jobs, and a
process that serves only the API dispatches nothing), so they cannot say what this project did in the last
hour."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client._models import Run
from strait_client.v1 import run_pb2
from strait_server.console import activity, charts
from strait_server.console.api import Caller, ConsoleApi
from strait_server.console.pages.runs import job_slugs, project_only
from strait_server.console.web import API, caller, render, session_of

LIST_PAGE = 1000  # runs per ListRuns call (the API's largest page)
RECENT_PAGES = 3  # pages of runs read for the last hour
DEPTH_JOBS = 25  # jobs whose unfinished runs are counted (one page each)
PARALLEL_CALLS = 4
UNFINISHED = [run_pb2.RUN_STATUS_QUEUED, run_pb2.RUN_STATUS_DELAYED, run_pb2.RUN_STATUS_EXECUTING]


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/overview", overview_page)


async def overview_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api, who = request.app[API], caller(request)
    start = activity.window_start(datetime.now(UTC))
    slugs = await job_slugs(request)
    (recent, capped), depths = await asyncio.gather(recent_runs(api, who, start), queue_depths(api, who, slugs))
    hour = activity.activity(recent, start, capped)
    return render(request, "overview.html", title="Overview", hour=hour, total=hour.total, depths=depths,
                  more_jobs=max(0, len(slugs) - DEPTH_JOBS), read_limit=RECENT_PAGES * LIST_PAGE, depth_limit=LIST_PAGE,
                  throughput=_throughput_chart(hour), waits=_wait_chart(hour), depth_chart=_depth_chart(depths),
                  seconds=seconds)


async def recent_runs(api: ConsoleApi, who: Caller, start: datetime) -> tuple[list[Run], bool]:
    """The runs created since `start`, newest first, up to RECENT_PAGES pages; and whether more were left."""
    after = Timestamp()
    after.FromDatetime(start)
    runs: list[Run] = []
    token = ""
    for _ in range(RECENT_PAGES):
        listed = await api.call(who, api.runs.ListRuns, run_pb2.ListRunsRequest(
            create_time_after=after, page_size=LIST_PAGE, page_token=token))
        runs += [Run.from_proto(r) for r in listed.runs]
        token = listed.next_page_token
        if not token:
            return runs, False
    return runs, True


async def queue_depths(api: ConsoleApi, who: Caller, slugs: dict[str, str]) -> list[activity.Depth]:
    """Queued, delayed and executing runs of the first DEPTH_JOBS jobs (one page each), busiest first."""
    gate = asyncio.Semaphore(PARALLEL_CALLS)

    async def one(job_id: str, slug: str) -> activity.Depth:
        async with gate:
            listed = await api.call(who, api.runs.ListRuns, run_pb2.ListRunsRequest(
                job_id=job_id, statuses=UNFINISHED, page_size=LIST_PAGE))
        return activity.depth(slug, [Run.from_proto(r) for r in listed.runs], bool(listed.next_page_token))

    counted = await asyncio.gather(*(one(i, s) for i, s in list(slugs.items())[:DEPTH_JOBS]))
    return sorted(counted, key=lambda d: (-d.total, d.job))


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _labels(hour: activity.Activity) -> list[str]:
    return [b.start.strftime("%H:%M") for b in hour.buckets]


def _throughput_chart(hour: activity.Activity) -> charts.Chart:
    stacks = [(b.completed, b.failed, b.ended_otherwise, b.unfinished) for b in hour.buckets]
    return charts.columns("Runs created per 5 minutes, by how they ended", _labels(hour), stacks,
                          ("ok", "bad", "muted", "idle"), ("completed", "failed", "canceled or expired",
                                                           "not finished"), _count)


def _wait_chart(hour: activity.Activity) -> charts.Chart:
    stacks = [(b.wait(0.5) or 0.0,) for b in hour.buckets]
    return charts.columns("Median wait from due to first start, per 5 minutes", _labels(hour), stacks, ("busy",),
                          ("median wait",), seconds)


def _depth_chart(depths: list[activity.Depth]) -> charts.Chart:
    shown = [d for d in depths if d.total]
    return charts.rows("Unfinished runs per job", [d.job for d in shown],
                       [(d.queued, d.delayed, d.executing) for d in shown], ("idle", "muted", "busy"),
                       ("queued", "delayed", "executing"), _count,
                       totals=[("at least " if d.capped else "") + _count(d.total) for d in shown])
