from __future__ import annotations

import pytest
import uvloop

from strait_server.cli import event_loop_factory, main
from strait_server.config import ConfigError


def test_uvloop_is_the_default_and_asyncio_the_alternative() -> None:
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None  # asyncio.Runner's own loop


def test_an_unknown_event_loop_is_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError):
        event_loop_factory("trio")
    monkeypatch.setenv("STRAIT_EVENT_LOOP", "trio")
    assert main(["migrate"]) == 2
    assert "STRAIT_EVENT_LOOP must be uvloop or asyncio" in capsys.readouterr().err


def test_an_unknown_log_level_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STRAIT_LOG_LEVEL", "soon")
    assert main(["migrate"]) == 2
    assert "STRAIT_LOG_LEVEL must be one of debug, info, warning, error" in capsys.readouterr().err


def test_a_deadlock_reaches_the_caller_as_aborted_not_internal() -> None:
    import asyncpg
    import grpc

    from strait_server.api.interceptor import _map_exception

    for exc in (asyncpg.DeadlockDetectedError("deadlock detected"), asyncpg.SerializationError("could not")):
        code, message, _ = _map_exception(exc)
        assert code is grpc.StatusCode.ABORTED and "retry" in message
