"""`strait jobs list|get|create|update|delete`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
from rich.console import RenderableType

from strait_client._models import Job
from strait_client.cli._context import ClientGroup, Refused, client, refusing_bad_input
from strait_client.cli._parse import DURATION, FIELD_VALUE, KEY_VALUE
from strait_client.cli._render import details, output_option, show, table

F = TypeVar("F", bound=Callable[..., Any])


@click.group(cls=ClientGroup)
def jobs() -> None:
    """Create, read, change and delete the project's jobs."""


def where(job: Job) -> str:
    """Where a job's runs go: its endpoint, or its worker queue."""
    return job.endpoint_url or f"worker queue {job.queue}"


def jobs_table(found: list[Job]) -> RenderableType:
    return table(["SLUG", "ID", "RUNS GO TO", "ENABLED", "ATTEMPTS", "TIMEOUT", "SCHEDULE"],
                 ([j.slug, j.id, where(j), j.enabled, j.max_attempts, j.timeout, j.cron] for j in found))


def job_options(command: F) -> F:
    """The job fields `create` and `update` take as options."""
    options = [
        click.option("--name", help="Display name."),
        click.option("--description", help="What the job does."),
        click.option("--fallback-endpoint", "fallback_endpoint_url", metavar="URL",
                     help="Where an attempt goes once when the endpoint is unreachable, times out or answers 429."),
        click.option("--worker-queue", "queue", metavar="QUEUE",
                     help="Run on workers of this queue instead of over HTTP (execution mode worker)."),
        click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts before a run is dead-lettered."),
        click.option("--timeout", type=DURATION, help="Per-attempt timeout, e.g. 30s or 5m."),
        click.option("--priority", type=click.IntRange(0, 10), help="0 (lowest) to 10; higher runs first."),
        click.option("--max-concurrency", type=click.IntRange(min=0), help="Runs executing at once (0: no limit)."),
        click.option("--cron", help="A cron schedule, e.g. '*/5 * * * *' (see also `strait schedules`)."),
        click.option("--timezone", help="The cron schedule's IANA time zone, e.g. Europe/Paris (default UTC)."),
        click.option("--tag", "tags", type=KEY_VALUE, multiple=True, help="KEY=VALUE tag; repeat for more."),
        click.option("--enable/--disable", "enabled", default=None,
                     help="Whether the job accepts triggers (default: enabled when created)."),
        click.option("--set", "extra", type=FIELD_VALUE, multiple=True,
                     help="Any other Job field as FIELD=VALUE (VALUE read as JSON when it parses, else as text; "
                          "durations in seconds), e.g. --set dedup_window=60; repeat for more."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def job_fields(given: dict[str, Any]) -> dict[str, Any]:
    """The Job fields the options named (unset options left out)."""
    extra = dict(given.pop("extra", ()))
    tags = given.pop("tags", ())
    fields = {name: value for name, value in given.items() if value is not None}
    if tags:
        fields["tags"] = dict(tags)
    if "queue" in fields:
        fields["execution_mode"] = "worker"
    if isinstance(fields.get("timeout"), timedelta) and fields["timeout"] <= timedelta(0):
        raise click.BadParameter("must be positive", param_hint="--timeout")
    return {**fields, **extra}


@jobs.command("list")
@output_option
@click.pass_context
def list_jobs(ctx: click.Context, output: str) -> None:
    """List every job of the project, oldest first."""
    found = list(client(ctx).jobs.list())
    show(output, found, lambda: jobs_table(found))


@jobs.command("get")
@click.argument("job")
@output_option
@click.pass_context
def get_job(ctx: click.Context, job: str, output: str) -> None:
    """Show JOB (a slug or a job_ id) with all its settings."""
    found = client(ctx).jobs.get(job)
    show(output, found, lambda: details(found))


@jobs.command("create")
@click.argument("slug")
@click.argument("endpoint_url", metavar="[ENDPOINT_URL]", required=False, default="")
@job_options
@output_option
@click.pass_context
def create_job(ctx: click.Context, /, slug: str, endpoint_url: str, output: str, **given: Any) -> None:
    """Create a job named SLUG whose runs are POSTed to ENDPOINT_URL (or, with --worker-queue, run by
    workers)."""
    with refusing_bad_input("bad job settings"):
        created = client(ctx).jobs.create(slug, endpoint_url, **job_fields(given))
    show(output, created, lambda: details(created))


@jobs.command("update")
@click.argument("job")
@click.option("--endpoint", "endpoint_url", metavar="URL", help="The new endpoint URL.")
@click.option("--slug", "new_slug", help="Rename the job.")
@click.option("--etag", default="", help="Only update if the job is unchanged since this etag was read.")
@job_options
@output_option
@click.pass_context
def update_job(ctx: click.Context, /, job: str, new_slug: str | None, etag: str, output: str, **given: Any) -> None:
    """Change the given settings of JOB (a slug or a job_ id); the others keep their values."""
    fields = job_fields({**given, "slug": new_slug})
    if not fields:
        raise Refused("name at least one setting to change (see `strait jobs update --help`)")
    with refusing_bad_input("bad job settings"):
        updated = client(ctx).jobs.update(job, etag=etag, **fields)
    show(output, updated, lambda: details(updated))


@jobs.command("delete")
@click.argument("job")
@click.option("--etag", default="", help="Only delete if the job is unchanged since this etag was read.")
@output_option
@click.pass_context
def delete_job(ctx: click.Context, job: str, etag: str, output: str) -> None:
    """Delete JOB (a slug or a job_ id) and cancel its unfinished runs; its slug becomes free."""
    deleted = client(ctx).jobs.delete(job, etag=etag)
    show(output, deleted, lambda: f"deleted job {deleted.slug} ({deleted.id})")
