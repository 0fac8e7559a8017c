"""How `strait runs stats` looks to people: the window's totals, its busy buckets, and each job's queue."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from strait_client._run_stats_models import DurationPercentiles, RunStats
from strait_client.cli._render import details, span, table, when


def _percentiles(p: DurationPercentiles) -> str:
    return f"p50 {span(p.p50)}, p95 {span(p.p95)} (of {p.count})" if p.count else "-"


def stats_view(stats: RunStats) -> RenderableType:
    t = stats.totals
    window = Text(f"Runs from {when(stats.start_time)} to {when(stats.end_time)}, in buckets of {span(stats.bucket)}")
    summary = details(t, skip=("start_time", "wait", "duration"),
                      extra=[("wait", _percentiles(t.wait)), ("duration", _percentiles(t.duration))])
    busy = [b for b in stats.buckets if b.created or b.finished]
    buckets = table(["FROM", "CREATED", "COMPLETED", "FAILED", "CANCELED", "EXPIRED", "WAIT P50", "WAIT P95",
                     "DURATION P50", "DURATION P95"],
                    ([when(b.start_time), b.created, b.completed, b.failed, b.canceled, b.expired, b.wait.p50,
                      b.wait.p95, b.duration.p50, b.duration.p95] for b in busy))
    queues = table(["JOB", "QUEUED", "DELAYED", "EXECUTING"],
                   ([q.job_slug, q.queued, q.delayed, q.executing] for q in stats.queues))
    return Group(window, summary, Text(""),
                 buckets if busy else Text("No runs were created or finished in the window."), Text(""),
                 queues if stats.queues else Text("No job has unfinished runs."))
