"""An API process and a separate dispatcher process: the enqueue hint wakes the dispatcher at once,
over Redis pub/sub or PostgreSQL LISTEN/NOTIFY, long before its slow poll would."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from strait_client.v1 import run_pb2
from strait_server.app import Role
from strait_server.config import Settings
from tests.conftest import AppFactory, connect
from tests.sink import Sink


@pytest.mark.parametrize("via", ["redis", "postgres"])
async def test_hint_wakes_a_dispatcher_in_another_process(make_app: AppFactory, settings: Settings, sink: Sink,
                                                          via: str) -> None:
    slow_poll = timedelta(seconds=60)
    front = await make_app(frozenset({Role.API}), wake_via=via, poll_interval=slow_poll)
    await make_app(frozenset({Role.WORKER}), wake_via=via, poll_interval=slow_poll)
    api = await connect(front, settings.admin_key)
    job = await api.create_job("hinted", sink.script("/hinted"))
    started = time.monotonic()
    run = await api.trigger(job)
    await api.wait_status(run.id, run_pb2.RUN_STATUS_COMPLETED, timeout=10)
    assert time.monotonic() - started < 5, "woken by the hint, not by the 60 s poll"
    await api.channel.close()
