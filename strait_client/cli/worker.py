"""`strait worker MODULE:ATTR`: runs a strait_client Worker until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os

import click

from strait_client.cli._context import Refused
from strait_client.worker import load_worker

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command()
@click.argument("target", metavar="MODULE:ATTR")
def worker(target: str) -> None:
    """Run the Worker that MODULE:ATTR names (e.g. myapp.tasks:worker; the current directory is importable)
    until SIGTERM or SIGINT, connected with STRAIT_ADDRESS and STRAIT_API_KEY. STRAIT_LOG_LEVEL sets how much
    it logs."""
    level = os.environ.get("STRAIT_LOG_LEVEL", "info")
    if level.lower() not in LOG_LEVELS:
        raise Refused(f"STRAIT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    try:
        found = load_worker(target)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    found.run()
