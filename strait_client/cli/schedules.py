"""`strait schedules list|get|create|delete|pause|resume|trigger`: the cron schedules of jobs.

A job's schedule is part of the job (its `cron`, `timezone` and `cron_overlap_policy` fields): `create` and
`delete` set and clear them, the other commands use ScheduleService.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group, RenderableType

from strait_client._enums import CronOverlapPolicy
from strait_client._models import Job
from strait_client.cli._context import ClientGroup, client
from strait_client.cli._render import details, output_option, show, table, when
from strait_client.cli._runs_view import JobNames, run_details

SCHEDULE_FIELDS = ("id", "slug", "cron", "timezone", "cron_overlap_policy", "next_fire_time", "schedule_paused")


@click.group(cls=ClientGroup)
def schedules() -> None:
    """Read, set, pause and resume the cron schedules of jobs."""


def schedule_of(job: Job) -> dict[str, Any]:
    """The schedule fields of a job (what --output json prints)."""
    return {name: getattr(job, name) for name in SCHEDULE_FIELDS}


def schedules_table(jobs: list[Job]) -> RenderableType:
    return table(["JOB", "CRON", "TIME ZONE", "OVERLAP", "NEXT FIRE", "PAUSED"],
                 ([j.slug, j.cron, j.timezone, j.cron_overlap_policy, j.next_fire_time, j.schedule_paused]
                  for j in jobs))


def schedule_details(job: Job) -> RenderableType:
    return details(job, skip=[f for f in Job.__dataclass_fields__ if f not in SCHEDULE_FIELDS])


@schedules.command("list")
@output_option
@click.pass_context
def list_schedules(ctx: click.Context, output: str) -> None:
    """List the jobs that have a schedule."""
    found = [j for j in client(ctx).jobs.list() if j.cron]
    show(output, [schedule_of(j) for j in found], lambda: schedules_table(found))


@schedules.command("get")
@click.argument("job")
@click.option("--count", type=click.IntRange(1, 100), default=5, show_default=True, help="How many fire times.")
@output_option
@click.pass_context
def get_schedule(ctx: click.Context, job: str, count: int, output: str) -> None:
    """Show the schedule of JOB (a slug or a job_ id) and when it fires next."""
    strait = client(ctx)
    found = strait.jobs.get(job)
    times = strait.schedules.fire_times(found.id, count)
    show(output, {**schedule_of(found), "fire_times": times},
         lambda: Group(schedule_details(found), table(["NEXT FIRE TIMES"], ([when(t)] for t in times))))


@schedules.command("create")
@click.argument("job")
@click.argument("cron")
@click.option("--timezone", help="IANA time zone the cron expression is read in, e.g. Europe/Paris (default UTC).")
@click.option("--overlap", type=click.Choice([p.value for p in CronOverlapPolicy]),
              help="What a tick does while an earlier run is still active (default allow).")
@output_option
@click.pass_context
def create_schedule(ctx: click.Context, job: str, cron: str, timezone: str | None, overlap: str | None,
                    output: str) -> None:
    """Schedule JOB (a slug or a job_ id) on the cron expression CRON, e.g. '*/5 * * * *'."""
    fields = {"cron": cron, "timezone": timezone, "cron_overlap_policy": overlap}
    updated = client(ctx).jobs.update(job, **{k: v for k, v in fields.items() if v is not None})
    show(output, schedule_of(updated), lambda: schedule_details(updated))


@schedules.command("delete")
@click.argument("job")
@output_option
@click.pass_context
def delete_schedule(ctx: click.Context, job: str, output: str) -> None:
    """Remove the schedule of JOB; the job stays and still accepts triggers."""
    updated = client(ctx).jobs.update(job, cron=None, timezone=None, cron_overlap_policy=None)
    show(output, schedule_of(updated), lambda: f"job {updated.slug} has no schedule now")


@schedules.command("pause")
@click.argument("job")
@output_option
@click.pass_context
def pause_schedule(ctx: click.Context, job: str, output: str) -> None:
    """Stop the schedule of JOB from firing (the job still accepts triggers)."""
    paused = client(ctx).schedules.pause(job)
    show(output, schedule_of(paused), lambda: schedule_details(paused))


@schedules.command("resume")
@click.argument("job")
@output_option
@click.pass_context
def resume_schedule(ctx: click.Context, job: str, output: str) -> None:
    """Start the paused schedule of JOB again from its next tick (missed ticks do not fire)."""
    resumed = client(ctx).schedules.resume(job)
    show(output, schedule_of(resumed), lambda: schedule_details(resumed))


@schedules.command("trigger")
@click.argument("job")
@output_option
@click.pass_context
def trigger_schedule(ctx: click.Context, job: str, output: str) -> None:
    """Start a run of JOB now, as its schedule would."""
    strait = client(ctx)
    run = strait.schedules.trigger(job)
    show(output, run, lambda: run_details(run, JobNames(strait)(run.job_id)))
