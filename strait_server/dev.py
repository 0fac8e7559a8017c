"""`strait dev`: every role in one process, on an embedded PostgreSQL and Redis kept in a data directory.

What it guarantees besides serving: it refuses an address already in use (and a data directory another
`strait dev` holds) before starting anything; its backends stop with it, on Ctrl-C, SIGTERM, SIGHUP, when the
process that started it ends, and (on Linux) when it is killed; and it prints only its banner unless asked
for logs (`--verbose`, STRAIT_LOG_LEVEL).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from strait_server import auth, embedded
from strait_server.app import App
from strait_server.config import ConfigError, Settings, split_host_port
from strait_server.embedded.lock import DataDirInUse, DataDirLock
from strait_server.lifecycle import run_until_stopped, stop_signals, watch_parent
from strait_server.store.projects import ProjectStore

DEFAULT_METRICS_ADDRESS = "127.0.0.1:0"  # a free port, printed in the banner
# The console's usual address; a free port instead when something else holds it (the banner prints the URL).
DEFAULT_CONSOLE_ADDRESS = "127.0.0.1:8080"


@dataclass(frozen=True)
class DevOptions:
    address: str
    data_dir: Path
    hangup_ignored: bool  # started under nohup: outlive the terminal and the parent
    parent_pid: int


class StopRequested(Exception):
    """A stop signal arrived while the backends were starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run(options: DevOptions, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """Runs `strait dev` until it is stopped. Raises ConfigError (nothing started) for a busy address or
    data directory, StopRequested when stopped during start-up."""
    check_address_free(options.address)
    lock = DataDirLock(options.data_dir)
    try:
        lock.acquire()
    except DataDirInUse as exc:
        raise ConfigError(str(exc)) from None
    try:
        # Until the server's own handlers take over, a stop signal interrupts the start-up.
        with _signals_raise(stop_signals(options.hangup_ignored)):
            # Started here, on the main thread, and not from the event loop's executor: Linux stops a backend
            # when the thread that started it ends (children.spawn).
            backends = embedded.start(options.data_dir)
            try:
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    runner.run(_serve(options, backends))
            finally:
                backends.close()
    finally:
        lock.release()


def check_address_free(address: str) -> None:
    """Refuses an address something already listens on, before anything starts. (The gRPC server of
    `strait dev` also binds without SO_REUSEPORT, so a second one cannot share the port either.)"""
    host, port = split_host_port(address, "--address")
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
    failures = []
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"cannot listen on {address}: the port is in use (another strait dev?); "
                                      "stop that process or pass --address HOST:PORT") from None
                failures.append(exc.strerror)
    # The server needs one of a name's addresses (say, not the IPv6 one where IPv6 is off); none is refused.
    if failures and len(failures) == len(found):
        raise ConfigError(f"cannot listen on {address}: {failures[0]}")


@contextmanager
def _signals_raise(signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    """A stop signal interrupts what runs (the backends' start-up), and what started is then stopped."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve(options: DevOptions, backends: embedded.EmbeddedBackends) -> None:
    settings = await asyncio.to_thread(dev_settings, options.address, options.data_dir, backends)
    app = App(settings)
    stop = asyncio.Event()
    watcher = None if options.hangup_ignored else asyncio.create_task(watch_parent(options.parent_pid, stop))

    async def announce() -> None:
        key = await dev_key(app, options.data_dir)
        print("\n".join(banner(options.address, app, options.data_dir, key)), flush=True)

    try:
        await run_until_stopped(app, announce, signals=stop_signals(options.hangup_ignored), stop=stop)
    finally:
        if watcher is not None:
            watcher.cancel()


def banner(address: str, app: App, data_dir: Path, key: str) -> list[str]:
    host = address.rsplit(":", 1)[0]
    metrics_host = app.settings.metrics_address.rsplit(":", 1)[0]
    return [
        f"Strait is serving on {host}:{app.port} (embedded PostgreSQL and Redis in {data_dir})",
        f"  export STRAIT_ADDRESS={host}:{app.port}",
        f"  export STRAIT_API_KEY={key}",
        f"  admin key (STRAIT_ADMIN_KEY): {app.settings.admin_key}",
        f"  metrics: http://{metrics_host}:{app.metrics_port}/metrics",
        *([f"  console: http://{_console_host(app)}:{app.console.port}/ (sign in with the API key above)"]
          if app.console is not None else []),
        "Stop with Ctrl-C.",
    ]


def _console_host(app: App) -> str:
    host = app.settings.console_address.rsplit(":", 1)[0]
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def console_address(env: dict[str, str]) -> str:
    """STRAIT_CONSOLE_ADDRESS when set (empty: no console); else 127.0.0.1:8080, or a free port when that one is
    taken."""
    if "STRAIT_CONSOLE_ADDRESS" in env:
        return env["STRAIT_CONSOLE_ADDRESS"]
    host, port = DEFAULT_CONSOLE_ADDRESS.rsplit(":", 1)
    try:
        with socket.create_server((host, int(port))):
            return DEFAULT_CONSOLE_ADDRESS
    except OSError:
        return f"{host}:0"


def dev_settings(address: str, data_dir: Path, backends: embedded.EmbeddedBackends) -> Settings:
    env = dict(os.environ)
    return Settings.from_env(
        env, database_url=backends.database_url, redis_url=backends.redis_url, address=address,
        allow_private_endpoints=True, reuse_port=False,
        metrics_address=env.get("STRAIT_METRICS_ADDRESS") or DEFAULT_METRICS_ADDRESS,
        console_address=console_address(env),
        admin_key=env.get("STRAIT_ADMIN_KEY") or _persistent_secret(data_dir / "admin-key"),
        jwt_signing_key=env.get("STRAIT_JWT_SIGNING_KEY") or _persistent_secret(data_dir / "jwt-key"),
    )


async def dev_key(app: App, data_dir: Path) -> str:
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
