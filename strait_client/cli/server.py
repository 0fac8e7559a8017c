"""`strait dev|serve|migrate`: the server's commands, handed to `strait_server.cli`, which is imported only
when one of them runs (the client commands need none of the server's dependencies)."""

from __future__ import annotations

from pathlib import Path

import click

from strait_client.cli._context import Refused

SERVER_COMMANDS = ("dev", "serve", "migrate")
# Options these commands do not declare here still reach the server's own parser, which checks them.
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def run_server(argv: list[str]) -> int:
    """Runs `strait_server.cli` with `argv`; a clear refusal when the server's dependencies are missing."""
    try:
        from strait_server.cli import main as server_main
    except ModuleNotFoundError as missing:
        raise Refused(f"`strait {argv[0]}` needs the server's dependencies, which are not installed "
                      f"({missing}): pip install 'strait[server]'") from None
    return server_main(argv)


@click.command(context_settings=PASS_THROUGH)
@click.option("--address", metavar="HOST:PORT",
              help="Where to serve gRPC (default: STRAIT_ADDRESS, else 127.0.0.1:50051).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".strait"),
              show_default=True, help="Where the embedded PostgreSQL and Redis keep their data.")
@click.pass_context
def dev(ctx: click.Context, address: str | None, data_dir: Path) -> None:
    """Serve for development, with an embedded PostgreSQL and Redis; prints the key to use."""
    argv = ["dev", "--data-dir", str(data_dir), *(["--address", address] if address else []), *ctx.args]
    ctx.exit(run_server(argv))


@click.command(context_settings=PASS_THROUGH)
@click.option("--mode", type=click.Choice(["all", "api", "worker", "scheduler"]), default="all", show_default=True,
              help="Which roles this process plays (docs/architecture.md).")
@click.pass_context
def serve(ctx: click.Context, mode: str) -> None:
    """Serve against STRAIT_DATABASE_URL and STRAIT_REDIS_URL."""
    ctx.exit(run_server(["serve", "--mode", mode, *ctx.args]))


@click.command(context_settings=PASS_THROUGH)
@click.option("--rollback", is_flag=True, help="Roll back every migration instead, dropping all of Strait's data.")
@click.option("--yes", is_flag=True,
              help="With --rollback: do not ask for confirmation (needed when standard input is not a terminal).")
@click.pass_context
def migrate(ctx: click.Context, rollback: bool, yes: bool) -> None:
    """Apply the pending database migrations to STRAIT_DATABASE_URL (or roll them all back)."""
    argv = ["migrate", *(["--rollback"] if rollback else []), *(["--yes"] if yes else []), *ctx.args]
    ctx.exit(run_server(argv))
