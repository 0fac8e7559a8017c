"""`strait dev | serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from strait_server import db
from strait_server.app import App, roles_for_mode
from strait_server.config import MODES, ConfigError, Settings, serve_mode
from strait_server.faults import DATABASE_ERRORS, REDIS_ERRORS
from strait_server.lifecycle import LoopDied, run_until_stopped, stop_signals

__all__ = ["LoopDied", "event_loop_factory", "main"]

# Read before any handler is installed: a process started under `nohup` keeps running when its terminal closes.
_HANGUP_IGNORED = hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
_PARENT_PID = os.getppid()


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def _preflight(settings: Settings) -> None:
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
        await conn.close()
    except (*DATABASE_ERRORS, ValueError) as exc:  # type: ignore[misc]  # mypy cannot see into the tuple
        raise ConfigError(f"cannot reach PostgreSQL at {_redact(settings.database_url)}: {exc}") from None
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    except (*REDIS_ERRORS, ValueError) as exc:  # type: ignore[misc]
        raise ConfigError(f"cannot reach Redis at {_redact(settings.redis_url)}: {exc}") from None
    finally:
        await client.aclose()


async def _run_until_signal(app: App, on_started: Callable[[], Awaitable[None]] | None = None) -> None:
    await run_until_stopped(app, on_started, signals=stop_signals(_HANGUP_IGNORED))


LOG_LEVELS = ("debug", "info", "warning", "error")


async def _serve(mode: str | None) -> None:
    mode = serve_mode(mode)
    settings = Settings.from_env()
    settings.require_backends()
    await _preflight(settings)
    await _run_until_signal(App(settings, roles_for_mode(mode)))


async def _migrate(rollback: bool) -> None:
    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("STRAIT_DATABASE_URL must be set")
    if rollback:
        await db.rollback_migrations(settings.database_url)
        print("rolled back all migrations")
    else:
        applied = await db.apply_migrations(settings.database_url)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """STRAIT_EVENT_LOOP: uvloop (the default where it is installed) or asyncio's own loop.

    uvloop's transports cost a third of asyncio's per endpoint request and speed up asyncpg and
    redis-py as well; grpc.aio runs on any asyncio loop."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise ConfigError(f"STRAIT_EVENT_LOOP must be uvloop or asyncio, not {name!r}")
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows): asyncio's loop it is
        return None
    return uvloop.new_event_loop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strait", description="Strait job orchestration server")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="serve with embedded PostgreSQL and Redis (development)")
    dev.add_argument("--address", default=os.environ.get("STRAIT_ADDRESS", "127.0.0.1:50051"))
    dev.add_argument("--data-dir", type=Path, default=Path(".strait"))
    dev.add_argument("--verbose", action="store_true",
                     help="log start-up and shutdown (as STRAIT_LOG_LEVEL=info does); by default only the banner")
    serve = sub.add_parser("serve", help="serve against STRAIT_DATABASE_URL and STRAIT_REDIS_URL")
    serve.add_argument("--mode", choices=MODES, help="the roles to run (default: STRAIT_MODE, else all)")
    migrate = sub.add_parser("migrate", help="apply database migrations (or roll them back)")
    migrate.add_argument("--rollback", action="store_true", help="roll back every migration (drops all data)")
    migrate.add_argument("--yes", action="store_true", help="roll back without asking for confirmation")
    worker = sub.add_parser("worker", help="run a worker (a strait_client Worker) until SIGTERM or SIGINT")
    worker.add_argument("target", help="module:attribute naming the Worker, e.g. myapp.tasks:worker")
    return parser


def _rollback_confirmed() -> bool:
    """Asks on a terminal before `migrate --rollback` drops every table; refuses without one (use --yes)."""
    where = _redact(os.environ.get("STRAIT_DATABASE_URL", "")) or "STRAIT_DATABASE_URL"
    if not sys.stdin.isatty():
        print(f"strait: migrate --rollback drops every Strait table and its data in {where}; "
              "pass --yes to confirm (standard input is not a terminal, so it cannot ask)", file=sys.stderr)
        return False
    try:
        answer = input(f"Roll back every migration of {where}, dropping every Strait table and its data? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("strait: nothing rolled back", file=sys.stderr)
    return False


def _load_worker(target: str) -> Any:
    """The Worker that `module:attribute` names (see strait_client.worker.load_worker)."""
    from strait_client.worker import load_worker

    try:
        return load_worker(target)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _dev(address: str, data_dir: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> int:
    # Imported here: `strait dev` is POSIX-only (process sessions, file locks), `serve` is not.
    from strait_server import dev
    from strait_server.embedded import BackendError

    try:
        dev.run(dev.DevOptions(address, data_dir.resolve(), _HANGUP_IGNORED, _PARENT_PID), loop_factory)
    except BackendError as exc:
        print(f"strait: {exc}", file=sys.stderr)
        return 1
    except dev.StopRequested as exc:  # stopped while the backends were starting
        return 128 + exc.signum
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `strait dev` prints its banner and warnings only, unless asked for more; the others log from info.
    quiet = args.command == "dev" and not args.verbose
    level = os.environ.get("STRAIT_LOG_LEVEL", "warning" if quiet else "info")
    if level.lower() not in LOG_LEVELS:
        print(f"strait: STRAIT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "worker":
            _load_worker(args.target).run()
            return 0
        loop_factory = event_loop_factory(os.environ.get("STRAIT_EVENT_LOOP", "uvloop"))
        if args.command == "migrate" and args.rollback and not args.yes and not _rollback_confirmed():
            return 2
        if args.command == "dev":
            return _dev(args.address, args.data_dir, loop_factory)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.command == "serve":
                runner.run(_serve(args.mode))
            else:
                runner.run(_migrate(args.rollback))
    except ConfigError as exc:
        print(f"strait: {exc}", file=sys.stderr)
        return 2
    except LoopDied as exc:
        print(f"strait: stopped because a background loop died ({exc}); see the log above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
