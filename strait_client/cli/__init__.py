"""The `strait` command line: the client's commands (jobs, trigger, runs, schedules, circuits, projects,
keys, worker) and the server's (dev, serve, migrate). See docs/cli.md.

The client commands need the `cli` extra (click and rich); without it, the server's commands still run.
"""

from __future__ import annotations

import sys

FALLBACK_COMMANDS = ("dev", "serve", "migrate", "worker")


def main(argv: list[str] | None = None) -> int:
    """The `strait` console script.

    Args:
        argv: The arguments (default: sys.argv[1:]).

    Returns:
        The exit code.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        from strait_client.cli._root import run
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in ("click", "rich"):
            raise
        return _without_terminal_libraries(args, missing)
    return run(args)


def _without_terminal_libraries(args: list[str], missing: ModuleNotFoundError) -> int:
    """Without click and rich, the server's commands go straight to the server's own parser."""
    if args and args[0] in FALLBACK_COMMANDS:
        try:
            from strait_server.cli import main as server_main
        except ModuleNotFoundError as no_server:
            print(f"strait: `strait {args[0]}` needs the server's dependencies, which are not installed "
                  f"({no_server}): pip install 'strait[server]'", file=sys.stderr)
            return 2
        return server_main(args)
    print(f"strait: the command line needs the `cli` extra ({missing}): pip install 'strait[cli]'", file=sys.stderr)
    return 2
