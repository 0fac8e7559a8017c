"""`strait trigger JOB [PAYLOAD|-] [--wait]`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from strait_client._client import Client
from strait_client._enums import RunStatus
from strait_client._models import Run
from strait_client.cli._context import EXIT_FAILED, Failed, Refused, client, refusing_bad_input
from strait_client.cli._parse import DURATION, KEY_VALUE, read_payload
from strait_client.cli._render import console, output_option, show, span
from strait_client.cli._runs_view import JobNames, run_details


@click.command()
@click.argument("job")
@click.argument("payload", required=False)
@click.option("--wait", is_flag=True,
              help="Wait until the run finishes and show it; exit code 0 only if it completed, else 1.")
@click.option("--wait-timeout", type=DURATION, metavar="DURATION",
              help="With --wait: give up after this long (exit code 1); default: wait as long as it takes.")
@click.option("--delay", type=DURATION, help="Start the run this long from now (it waits as delayed).")
@click.option("--priority", type=click.IntRange(0, 10), help="Override the job's priority (0-10).")
@click.option("--idempotency-key", default="", help="A repeat with the same key returns the first run.")
@click.option("--tag", "tags", type=KEY_VALUE, multiple=True, help="KEY=VALUE tag of the run; repeat for more.")
@output_option
@click.pass_context
def trigger(ctx: click.Context, job: str, payload: str | None, wait: bool, wait_timeout: timedelta | None,
            delay: timedelta | None, priority: int | None, idempotency_key: str, tags: tuple[tuple[str, str], ...],
            output: str) -> None:
    """Start a run of JOB (a slug or a job_ id). PAYLOAD is a JSON object, or - to read it from standard input;
    without it the payload is {}."""
    if wait_timeout is not None and not wait:
        raise Refused("--wait-timeout goes with --wait")
    body = read_payload(payload)
    strait = client(ctx)
    scheduled = datetime.now(UTC) + delay if delay else None
    with refusing_bad_input("bad run options"):
        run: Run = strait.jobs.trigger(job, body, scheduled_time=scheduled, priority=priority,
                                       idempotency_key=idempotency_key, tags=dict(tags) or None)
    if wait:
        run = _wait(strait, run, wait_timeout, output)
    show(output, run, lambda: run_details(run, JobNames(strait)(run.job_id)))
    if wait and run.status != RunStatus.COMPLETED:
        ctx.exit(EXIT_FAILED)


def _wait(strait: Client, run: Run, timeout: timedelta | None, output: str) -> Run:
    """The run once finished; a spinner meanwhile on a terminal."""
    out = console(stderr=True)
    try:
        if output == "table" and out.is_terminal:
            with out.status(f"waiting for {run.id} to finish"):
                return strait.runs.wait(run.id, timeout or timedelta(days=365))
        return strait.runs.wait(run.id, timeout or timedelta(days=365))
    except TimeoutError:
        raise Failed(f"{run.id} has not finished after {span(timeout)}") from None
