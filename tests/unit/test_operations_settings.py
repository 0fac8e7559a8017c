"""Settings of retention and API limits, and the client address used by the lockout."""

from __future__ import annotations

from datetime import timedelta

import pytest

from strait_server.api.limits import client_address
from strait_server.config import ConfigError, Settings


def test_defaults_follow_the_reference_model() -> None:
    s = Settings()
    assert s.retention == timedelta(days=30)
    assert (s.api_rate_limit, s.api_rate_window) == (1000, timedelta(seconds=60))
    assert s.lockout_tiers() == ((10, timedelta(minutes=1)), (25, timedelta(minutes=5)), (50, timedelta(minutes=15)))


def test_variables_parse_like_other_settings() -> None:
    s = Settings.from_env({"STRAIT_RETENTION": "720h", "STRAIT_API_RATE_LIMIT": "50", "STRAIT_API_RATE_WINDOW": "10s",
                           "STRAIT_AUTH_LOCKOUT": "25:5m, 5:500ms", "STRAIT_RETENTION_BATCH_SIZE": "100"})
    assert s.retention == timedelta(days=30) and s.retention_batch_size == 100
    assert (s.api_rate_limit, s.api_rate_window) == (50, timedelta(seconds=10))
    assert s.lockout_tiers() == ((5, timedelta(milliseconds=500)), (25, timedelta(minutes=5)))
    assert Settings.from_env({"STRAIT_AUTH_LOCKOUT": ""}).lockout_tiers() == ()


@pytest.mark.parametrize(("name", "value"), [
    ("STRAIT_AUTH_LOCKOUT", "10"), ("STRAIT_AUTH_LOCKOUT", "0:1m"), ("STRAIT_AUTH_LOCKOUT", "x:1m"),
    ("STRAIT_AUTH_LOCKOUT", "10:soon"), ("STRAIT_AUTH_LOCKOUT", "10:1m,10:5m"), ("STRAIT_AUTH_LOCKOUT", "3:0s"),
    ("STRAIT_API_RATE_LIMIT", "-1"), ("STRAIT_API_RATE_WINDOW", "0"), ("STRAIT_RETENTION", "-1d"),
    ("STRAIT_RETENTION_BATCH_SIZE", "0"), ("STRAIT_RETENTION_INTERVAL", "0"),
])
def test_malformed_values_stop_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:127.0.0.1:52314", "127.0.0.1"),
    ("ipv6:[::1]:52314", "::1"),
    ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
    ("unix:/tmp/strait.sock", "unix"),
    ("", "unknown"),
])
def test_client_address_drops_the_port(peer: str, address: str) -> None:
    assert client_address(peer) == address


def test_a_short_admin_key_stops_start_up() -> None:
    backends = {"database_url": "postgresql://x/y", "redis_url": "redis://x", "jwt_signing_key": "j" * 32}
    with pytest.raises(ConfigError, match="STRAIT_ADMIN_KEY must be at least 32 characters"):
        Settings(admin_key="a", **backends).require_backends()
    Settings(admin_key="a" * 32, **backends).require_backends()
    Settings(admin_key="", **backends).require_backends()  # no admin key at all: admin calls are refused
