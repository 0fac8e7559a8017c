"""`strait dev | serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from strait_server import auth, db, embedded
from strait_server.app import App, roles_for_mode
from strait_server.config import MODES, ConfigError, Settings, serve_mode
from strait_server.faults import DATABASE_ERRORS, REDIS_ERRORS
from strait_server.store.projects import ProjectStore
from strait_server.tasks import first_of

log = logging.getLogger("strait")


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


async def _run_until_signal(app: App, on_started: object = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        _tune_gc()
        _tune_malloc()
        if callable(on_started):
            await on_started()
        await first_of(stop.wait(), app.supervisor.crashed.wait())
        log.info("shutting down", extra={"action": "shutdown"})
    finally:
        await app.stop()
    if app.supervisor.crashed.is_set():
        raise LoopDied(app.supervisor.failure)


class LoopDied(Exception):
    """A background loop of the server died; the process exits with status 1 (see Supervisor)."""


def _tune_gc() -> None:
    """Once started: what start-up allocated (modules, protobuf descriptors, pools) is moved out of the
    collector's sight, and young collections run less often. A 1,000-run batch allocates thousands of
    short-lived objects, and collections were 6% of the server's CPU in the batch profile."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, second, third)


def _tune_malloc() -> None:
    """glibc only: buffers of 128 KiB and more (request messages, payloads) are mapped and unmapped on their
    own, and at most two arenas serve the gRPC threads. By default glibc raises its mapping threshold after the
    first large free and carves later large buffers out of the heap, which it rarely gives back: a burst of
    7 MB batches left the server at 860 MB instead of 346 MB. (MALLOC_* variables, when set, take precedence.)"""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, 2)


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_ARENA_MAX = -8
GC_YOUNG_THRESHOLD = 20_000
LOG_LEVELS = ("debug", "info", "warning", "error")  # allocations between young collections (CPython's default: 700)


async def _serve(mode: str | None) -> None:
    mode = serve_mode(mode)
    settings = Settings.from_env()
    settings.require_backends()
    await _preflight(settings)
    await _run_until_signal(App(settings, roles_for_mode(mode)))


def _persistent_secret(path: Path, nbytes: int = 32) -> str:
    value = _read(path)
    if not value:
        value = secrets.token_hex(nbytes)
        _write_private(path, value)
    return value


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _write_private(path: Path, value: str) -> None:
    path.write_text(value)
    path.chmod(0o600)


async def _dev_key(app: App, data_dir: Path) -> str:
    """The development project's API key (which may also connect workers): reused from the data directory while
    it stays valid."""
    assert app.pool is not None
    store = ProjectStore(app.pool)
    key_file = data_dir / "dev-api-key"
    secret = await asyncio.to_thread(_read, key_file)
    found = await store.authenticate(auth.digest_of(secret)) if secret else None
    if found is not None and auth.WORKERS_CONNECT in found.scopes:
        return secret
    project = await store.get_by_slug("dev") or await store.create("dev", "Development")
    secret, prefix, digest = auth.new_api_key()
    await store.create_key(project.id, "dev", prefix, digest, scopes=(auth.WORKERS_CONNECT,))
    await asyncio.to_thread(_write_private, key_file, secret)
    return secret


def _dev_settings(address: str, data_dir: Path, backends: embedded.EmbeddedBackends) -> Settings:
    env = dict(os.environ)
    return Settings.from_env(
        env, database_url=backends.database_url, redis_url=backends.redis_url, address=address,
        allow_private_endpoints=True,
        admin_key=env.get("STRAIT_ADMIN_KEY") or _persistent_secret(data_dir / "admin-key"),
        jwt_signing_key=env.get("STRAIT_JWT_SIGNING_KEY") or _persistent_secret(data_dir / "jwt-key"),
    )


async def _dev(address: str, data_dir: Path) -> None:
    backends = await asyncio.to_thread(embedded.start, data_dir)
    try:
        app = App(await asyncio.to_thread(_dev_settings, address, data_dir, backends))

        async def announce() -> None:
            key = await _dev_key(app, data_dir)
            host = address.rsplit(":", 1)[0]
            print(f"Strait is serving on {host}:{app.port} (embedded PostgreSQL and Redis in {data_dir})")
            print(f"  export STRAIT_ADDRESS={host}:{app.port}")
            print(f"  export STRAIT_API_KEY={key}")
            print(f"  admin key (STRAIT_ADMIN_KEY): {app.settings.admin_key}")
            print("Stop with Ctrl-C.", flush=True)

        await _run_until_signal(app, announce)
    finally:
        await asyncio.to_thread(backends.close)


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = os.environ.get("STRAIT_LOG_LEVEL", "info")
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
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.command == "dev":
                runner.run(_dev(args.address, args.data_dir.resolve()))
            elif args.command == "serve":
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

