"""Every background loop is supervised: one that dies stops the process; loops meant to retry count failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from strait_server.app import App
from strait_server.cli import LoopDied, _run_until_signal
from strait_server.config import Settings
from strait_server.events import EventBus
from strait_server.queue import Queue
from strait_server.scheduler.cron import CronScheduler
from strait_server.store.retention import RetentionStore
from strait_server.wake import RedisTransport
from tests.conftest import AppFactory, connect, eventually
from tests.sink import Sink


class Injected(RuntimeError):
    """A bug, injected into one loop."""


def _failing_after(calls: int, original: Callable[..., Any]) -> Callable[..., Any]:
    """`original`, except that every call after the first `calls` raises Injected."""
    made = 0

    def method(*args: Any, **kwargs: Any) -> Any:
        nonlocal made
        made += 1
        if made > calls:
            raise Injected(f"injected into {original.__qualname__}")
        return original(*args, **kwargs)
    return method


async def _trigger_one(app: App, settings: Settings, sink: Sink) -> None:
    api = await connect(app, settings.admin_key)
    job = await api.create_job("work", sink.url("/work"))
    await api.trigger(job)
    await api.channel.close()


async def _nothing(app: App, settings: Settings, sink: Sink) -> None:
    return None


# loop name -> (class, method, calls that succeed first, what makes the loop reach it)
LOOPS: dict[str, tuple[type, str, int, Callable[[App, Settings, Sink], Awaitable[None]]]] = {
    "settle-buffer": (Queue, "settle", 0, _trigger_one),
    # The first two are made at start-up (the dispatcher's and the worker plane's); either loop may die first.
    "dispatcher-heartbeat": (Queue, "heartbeat", 2, _nothing),
    "recover-sweep": (Queue, "recover", 0, _nothing),
    "promote-delayed": (Queue, "promote_delayed", 0, _nothing),
    "retention": (RetentionStore, "delete_batch", 0, _nothing),
    "wake-listener": (RedisTransport, "listen", 0, _nothing),
    "event-bus": (EventBus, "_wake_everyone", 0, _nothing),
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
async def test_a_loop_that_dies_stops_the_app(loop: str, make_app: AppFactory, settings: Settings, sink: Sink,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cls, name, calls, provoke = LOOPS[loop]
    monkeypatch.setattr(cls, name, _failing_after(calls, getattr(cls, name)))
    app = await make_app(retention_interval=timedelta(milliseconds=50))
    await provoke(app, settings, sink)
    await asyncio.wait_for(app.supervisor.crashed.wait(), 10)
    assert app.supervisor.failure.startswith((f"{loop}: Injected(", *SHARING.get(loop, ())))


# Loops that call the same method as another one of LOOPS: either may be the one that dies.
SHARING = {"dispatcher-heartbeat": ("worker-hub-heartbeat: Injected(",)}


async def test_strait_serve_stops_and_fails_when_a_loop_dies(settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Queue, "recover", _failing_after(0, Queue.recover))
    app = App(settings)
    with pytest.raises(LoopDied, match="recover-sweep"):
        await asyncio.wait_for(_run_until_signal(app), 30)
    assert app.dispatcher is not None and app.dispatcher.accepts_direct() is False  # it was stopped


@pytest.mark.parametrize("loop", ["cron", "claim"])
async def test_loops_meant_to_retry_count_failures_and_go_on(loop: str, make_app: AppFactory,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if loop == "cron":
        monkeypatch.setattr(CronScheduler, "fire_due", _failing_after(0, CronScheduler.fire_due))
    else:
        monkeypatch.setattr(Queue, "claim", _failing_after(0, Queue.claim))
    app = await make_app(poll_interval=timedelta(milliseconds=20))

    async def failed_twice() -> bool:
        failures = app.telemetry.metrics.registry.get_sample_value("strait_loop_errors_total", {"loop": loop})
        return (failures or 0) >= 2
    await eventually(failed_twice)
    assert not app.supervisor.crashed.is_set()
