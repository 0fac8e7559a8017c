"""The gRPC address: shared with another SO_REUSEPORT listener by default (several processes of one host),
refused with a clear configuration error when reuse_port is off (as `strait dev` runs)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from strait_server.app import App
from strait_server.config import ConfigError, Settings


@pytest.fixture
def shared_port() -> Iterator[int]:
    """A port another process-like listener holds, allowing SO_REUSEPORT (as a gRPC server does)."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_without_reuse_port_a_busy_address_is_a_configuration_error(settings: Settings,
                                                                          shared_port: int) -> None:
    app = App(settings.with_(address=f"127.0.0.1:{shared_port}", reuse_port=False))
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{shared_port}: the address is in use"):
            await app.start(migrate=False)
    finally:
        await app.stop()


async def test_with_reuse_port_the_address_is_shared(settings: Settings, shared_port: int) -> None:
    app = App(settings.with_(address=f"127.0.0.1:{shared_port}"))
    try:
        await app.start(migrate=False)
        assert app.port == shared_port
    finally:
        await app.stop()
