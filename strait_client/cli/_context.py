"""What every client command shares: the connection (from STRAIT_ADDRESS and STRAIT_API_KEY, as
`Client.from_env` reads them), and one way of reporting a failed call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from strait_client._client import Client
from strait_client._config import env_settings
from strait_client._errors import StraitError

EXIT_FAILED = 1
"""A call failed, or what was waited for did not end well (a run that did not complete)."""
EXIT_USAGE = 2
"""The command line or the environment is wrong (click's own code for usage errors)."""
EXIT_INTERRUPTED = 130
"""Stopped with Ctrl-C (128 + SIGINT), as shells report it."""


class Failed(click.ClickException):
    """The command did not succeed (exit 1), printed as one line: `strait: message`."""

    exit_code = EXIT_FAILED

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"strait: {self.message}", file=file, err=True)


class CallFailed(Failed):
    """A call the server refused: `strait: CODE: message (field: problem; ...)`."""

    def __init__(self, error: StraitError) -> None:
        super().__init__(describe(error))


class Refused(Failed):
    """What the command itself refuses before calling anything (exit 2)."""

    exit_code = EXIT_USAGE


def describe(error: StraitError) -> str:
    """CODE: message, then the field violations the message does not already name."""
    text = f"{error.code.name}: {error.message}"
    extra = [f"{field}: {problem}" for field, problem in error.field_violations
             if f"{field}: {problem}" not in error.message]
    extra += [f"{subject}: {problem}" for _, subject, problem in error.precondition_violations
              if problem not in error.message]
    if error.request_id:
        extra.append(f"request id {error.request_id}")
    return f"{text} ({'; '.join(extra)})" if extra else text


class ClientGroup(click.Group):
    """A group whose commands' failed calls end in one line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StraitError as error:
            raise CallFailed(error) from error


@contextmanager
def refusing_bad_input(what: str) -> Iterator[None]:
    """Turns the client's refusal of a value before any call (TypeError, ValueError) into a usage error."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise Refused(f"{what}: {exc}") from exc


def client(ctx: click.Context, *, admin: bool = False) -> Client:
    """The command's client, opened once per command line and closed when it ends.

    With `admin`, the key is STRAIT_ADMIN_KEY when it is set (projects and keys of every project), else
    STRAIT_API_KEY.
    """
    root = ctx.find_root()
    slot = "admin_client" if admin else "client"
    meta = root.meta
    if slot not in meta:
        address, key = env_settings()
        if admin:
            key = os.environ.get("STRAIT_ADMIN_KEY") or key
        if not key:
            wanted = "STRAIT_ADMIN_KEY or STRAIT_API_KEY" if admin else "STRAIT_API_KEY"
            raise Refused(f"set {wanted} to an API key (`strait dev` prints one)")
        meta[slot] = root.with_resource(Client(address, key))
    found: Client = meta[slot]
    return found
