"""Overview: the project's last hour (runs created and finished per 5 minutes by final status, waits to start,
attempt durations) and every job's unfinished runs, as small SVG charts with the figures as tables.

One GetRunStats call computes every figure in the database, so the page costs the same however many jobs the
project has, and its counts are exact. The server's Prometheus metrics are not used: they count what one
process did since it started, for every project at once, so they cannot say what this project did in the last
hour."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from strait_client._run_stats_models import RunStats
from strait_client.v1 import run_pb2
from strait_server.console import charts
from strait_server.console.pages.runs import project_only
from strait_server.console.web import API, caller, render, session_of


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/overview", overview_page)


async def overview_page(request: web.Request) -> web.StreamResponse:
    project_only(session_of(request))
    api = request.app[API]
    # The API's defaults: the last hour in 5-minute buckets.
    stats = RunStats.from_proto(await api.call(caller(request), api.runs.GetRunStats, run_pb2.GetRunStatsRequest()))
    return render(request, "overview.html", title="Overview", stats=stats, total=stats.totals,
                  unfinished=sum(q.total for q in stats.queues), finished=_finished_chart(stats),
                  waits=_wait_chart(stats), depth_chart=_depth_chart(stats), seconds=seconds)


def seconds(value: timedelta | None) -> str:
    if value is None:
        return "—"
    s = value.total_seconds()
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _labels(stats: RunStats) -> list[str]:
    return [b.start_time.strftime("%H:%M") if b.start_time else "" for b in stats.buckets]


def _finished_chart(stats: RunStats) -> charts.Chart:
    stacks = [(b.completed, b.failed, b.canceled, b.expired) for b in stats.buckets]
    return charts.columns("Runs finished per 5 minutes, by final status", _labels(stats), stacks,
                          ("ok", "bad", "muted", "idle"), ("completed", "failed", "canceled", "expired"), _count)


def _wait_chart(stats: RunStats) -> charts.Chart:
    stacks = [((b.wait.p50 or timedelta(0)).total_seconds(),) for b in stats.buckets]
    return charts.columns("Median wait to first start of the runs finished, per 5 minutes", _labels(stats), stacks,
                          ("busy",), ("median wait",), lambda s: seconds(timedelta(seconds=s)))


def _depth_chart(stats: RunStats) -> charts.Chart:
    return charts.rows("Unfinished runs per job", [q.job_slug for q in stats.queues],
                       [(q.queued, q.delayed, q.executing) for q in stats.queues], ("idle", "muted", "busy"),
                       ("queued", "delayed", "executing"), _count)
