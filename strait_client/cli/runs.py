"""`strait runs list|get|events|cancel|replay|watch|tail|stats`."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice

import click

from strait_client._enums import RunStatus
from strait_client.cli._context import EXIT_FAILED, ClientGroup, client
from strait_client.cli._follow import follow_run, tail
from strait_client.cli._parse import DURATION, KEY_VALUE, MOMENT
from strait_client.cli._render import output_option, show
from strait_client.cli._runs_view import JobNames, events_table, run_details, runs_table
from strait_client.cli._stats_view import stats_view

STATUS = click.Choice([s.value for s in RunStatus])


@click.group(cls=ClientGroup)
def runs() -> None:
    """Read, cancel, replay and follow runs."""


@runs.command("list")
@click.option("--job", help="Only runs of this job (a slug or a job_ id).")
@click.option("--status", "statuses", type=STATUS, multiple=True, help="Only runs in this status; repeat for more.")
@click.option("--since", type=MOMENT, metavar="DURATION|TIME",
              help="Only runs created after this: a duration ago (15m, 2h, 1d) or an ISO 8601 time "
                   "(local time unless it has an offset).")
@click.option("--tag", "tags", type=KEY_VALUE, multiple=True,
              help="Only runs with this KEY=VALUE tag; repeat for more (all must match).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="Show at most this many runs (0: all).")
@output_option
@click.pass_context
def list_runs(ctx: click.Context, job: str | None, statuses: tuple[str, ...], since: datetime | None,
              tags: tuple[tuple[str, str], ...], limit: int, output: str) -> None:
    """List the project's runs, newest first."""
    strait = client(ctx)
    found = strait.runs.list(job, statuses or None, since, tags=dict(tags) or None, page_size=min(limit or 200, 200))
    listed = list(islice(found, limit) if limit else found)
    show(output, listed, lambda: runs_table(listed, JobNames(strait)))


@runs.command("get")
@click.argument("run_id")
@output_option
@click.pass_context
def get_run(ctx: click.Context, run_id: str, output: str) -> None:
    """Show run RUN_ID with its payload, output and attempts."""
    strait = client(ctx)
    run = strait.runs.get(run_id)
    show(output, run, lambda: run_details(run, JobNames(strait)(run.job_id)))


@runs.command("events")
@click.argument("run_id")
@output_option
@click.pass_context
def run_events(ctx: click.Context, run_id: str, output: str) -> None:
    """List the events of run RUN_ID in order: status changes, logs, progress, checkpoints..."""
    events = client(ctx).runs.events(run_id)
    show(output, events, lambda: events_table(events))


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="", help="Why; kept in the run's status-change event.")
@output_option
@click.pass_context
def cancel_run(ctx: click.Context, run_id: str, reason: str, output: str) -> None:
    """Cancel run RUN_ID if it has not finished (an executing attempt's late result is ignored)."""
    strait = client(ctx)
    run = strait.runs.cancel(run_id, reason)
    show(output, run, lambda: run_details(run, JobNames(strait)(run.job_id)))


@runs.command("replay")
@click.argument("run_id")
@click.option("--idempotency-key", default="", help="A repeat with the same key returns the first replay.")
@output_option
@click.pass_context
def replay_run(ctx: click.Context, run_id: str, idempotency_key: str, output: str) -> None:
    """Start a new run with the payload of finished run RUN_ID (e.g. a dead-lettered one)."""
    strait = client(ctx)
    run = strait.runs.replay(run_id, idempotency_key)
    show(output, run, lambda: run_details(run, JobNames(strait)(run.job_id)))


@runs.command("watch")
@click.argument("run_id")
@output_option
@click.pass_context
def watch_run(ctx: click.Context, run_id: str, output: str) -> None:
    """Follow run RUN_ID live until it finishes: its status, a progress bar fed by its progress events, and
    its logs as they arrive. Exit code 0 when the run completed, 1 when it ended otherwise."""
    strait = client(ctx)
    final = follow_run(strait, strait.runs.get(run_id), output)
    if final != RunStatus.COMPLETED:
        ctx.exit(EXIT_FAILED)


@runs.command("tail")
@click.option("--job", help="Only events of this job's runs (a slug or a job_ id).")
@click.option("--status", "statuses", type=STATUS, multiple=True,
              help="Only status changes into this status (other events are left out); repeat for more.")
@click.option("--from-start", is_flag=True, help="Begin with the oldest stored event instead of now.")
@output_option
@click.pass_context
def tail_runs(ctx: click.Context, job: str | None, statuses: tuple[str, ...], from_start: bool, output: str) -> None:
    """Print the project's run events live, in commit order, until Ctrl-C."""
    strait = client(ctx)
    tail(strait, strait.runs.watch_all(job=job, statuses=statuses or None, from_start=from_start), output)


@runs.command("stats")
@click.option("--window", type=DURATION, help="How far back from now: 1m to 24h.  [default: 1h]")
@click.option("--bucket", type=DURATION,
              help="The width of each bucket: at least 1m, at most 288 in the window.  [default: 5m]")
@click.option("--job", help="Only this job's runs (a slug or a job_ id).")
@output_option
@click.pass_context
def run_stats(ctx: click.Context, window: timedelta | None, bucket: timedelta | None, job: str | None,
              output: str) -> None:
    """Count the runs of the last hour (or --window) per bucket: created, and finished by final status, with
    the waits to start and attempt durations of the finished ones; and each job's unfinished runs now."""
    stats = client(ctx).runs.stats(window=window, bucket=bucket, job=job)
    show(output, stats, lambda: stats_view(stats))
