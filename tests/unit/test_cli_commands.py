"""The command tree: every command and option explains itself, and the client commands load nothing of the
server."""

from __future__ import annotations

import subprocess
import sys

import click

from strait_client.cli._root import cli
from tests.unit.test_packaging import SERVER_ONLY


def _commands(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    commands = _commands(cli, "strait")
    assert {path for path, _ in commands} >= {
        "strait jobs create", "strait trigger", "strait runs watch", "strait runs tail", "strait schedules pause",
        "strait circuits reset", "strait projects update", "strait keys revoke", "strait worker", "strait dev",
        "strait serve", "strait migrate"}
    missing = [path for path, command in commands if not command.help]
    missing += [f"{path} --{p.name}" for path, command in commands for p in command.params
                if isinstance(p, click.Option) and not p.help]
    assert missing == []


def test_the_command_line_loads_no_server_dependency() -> None:
    code = ("import sys, strait_client.cli._root\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert {"click", "rich", "strait_client"} <= loaded
    assert loaded & (SERVER_ONLY | {"strait_server"}) == set()
