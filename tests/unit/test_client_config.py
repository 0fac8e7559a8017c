"""ClientConfig: the settings Client and AsyncClient share, and the channel options they become."""

from __future__ import annotations

from datetime import timedelta

import pytest

from strait_client import ClientConfig, Keepalive, RetryPolicy
from strait_client._config import USER_AGENT, resolve, seconds


def test_timeouts_are_seconds_or_timedeltas() -> None:
    assert seconds(2) == 2.0 and seconds(0.5) == 0.5 and seconds(timedelta(minutes=1)) == 60.0
    for bad in (0, -1, timedelta(0)):
        with pytest.raises(ValueError, match="positive"):
            seconds(bad)
    for wrong in ("5", True, None):
        with pytest.raises(TypeError):
            seconds(wrong)  # type: ignore[arg-type]
    assert ClientConfig(timeout=timedelta(seconds=5)).timeout_seconds == 5.0
    with pytest.raises(ValueError):
        ClientConfig(timeout=timedelta(seconds=-1))


def test_channel_options_put_the_callers_last() -> None:
    assert ClientConfig().grpc_options() == [("grpc.primary_user_agent", USER_AGENT)]
    config = ClientConfig(keepalive=Keepalive(time=timedelta(seconds=20), timeout=timedelta(seconds=5),
                                              without_calls=True),
                          channel_options=[("grpc.max_receive_message_length", 1 << 24)])
    assert config.grpc_options() == [
        ("grpc.primary_user_agent", USER_AGENT), ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 5_000), ("grpc.http2.ping_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 1 << 24)]
    with pytest.raises(ValueError):
        Keepalive(time=timedelta(0))


def test_keyword_arguments_override_the_config() -> None:
    base = ClientConfig(timeout=5, retry=RetryPolicy(max_attempts=2))
    assert resolve(None) == ClientConfig()
    assert resolve(base, timeout=None, retry=None) == base
    merged = resolve(base, timeout=timedelta(seconds=1), interceptors=["x"])
    assert (merged.timeout, merged.retry, merged.interceptors) == (timedelta(seconds=1), base.retry, ["x"])
