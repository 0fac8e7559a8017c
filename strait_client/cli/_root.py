"""The `strait` command group: every client command, the server's commands, and how a command line ends
(its exit code, and one line instead of a traceback when something fails)."""

from __future__ import annotations

import os
import sys

import click

from strait_client import __version__
from strait_client.cli._context import EXIT_INTERRUPTED, ClientGroup
from strait_client.cli.circuits import circuits
from strait_client.cli.jobs import jobs
from strait_client.cli.projects import keys, projects
from strait_client.cli.runs import runs
from strait_client.cli.schedules import schedules
from strait_client.cli.server import dev, migrate, serve
from strait_client.cli.trigger import trigger
from strait_client.cli.worker import worker


@click.group(cls=ClientGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-V", "--version", prog_name="strait", message="%(prog)s %(version)s",
                      help="Print the version and exit.")
def cli() -> None:
    """Strait: jobs run over HTTP or by workers, with retries, schedules and live events.

    The client commands talk to the server at STRAIT_ADDRESS (default 127.0.0.1:50051) with the API key in
    STRAIT_API_KEY; `projects` and `keys` use STRAIT_ADMIN_KEY when it is set. Exit codes: 0 success, 1 a call
    failed (or a waited-for run did not complete), 2 a bad command line or setting, 130 interrupted.
    """


for command in (jobs, trigger, runs, schedules, circuits, projects, keys, worker, dev, serve, migrate):
    cli.add_command(command)


def run(argv: list[str] | None) -> int:
    """Runs one command line and returns its exit code."""
    try:
        code = cli.main(args=argv, prog_name="strait", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`strait runs list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code if isinstance(code, int) else 0
