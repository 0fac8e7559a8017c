"""Run-event wake-ups between processes, through a real Redis: each process hears the others' commits, and not
its own a second time (it woke its own watchers when it published)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from strait_server.config import Settings
from strait_server.events import EventBus
from strait_server.redis_health import RedisHealth
from strait_server.tasks import Supervisor
from tests.conftest import eventually


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def _bus(redis: aioredis.Redis, namespace: str, heard: list[list[str]]) -> EventBus:
    supervisor = Supervisor()
    bus = EventBus(redis, namespace, supervisor, RedisHealth(redis, supervisor))
    bus.on_runs(lambda run_ids: heard.append(run_ids) if run_ids is not None else None)
    await bus.start()
    bus.start_publishing()
    return bus


async def test_a_process_hears_the_others_commits_and_its_own_once(redis: aioredis.Redis, settings: Settings) -> None:
    heard_a: list[list[str]] = []
    heard_b: list[list[str]] = []
    a = await _bus(redis, settings.redis_namespace, heard_a)
    b = await _bus(redis, settings.redis_namespace, heard_b)
    try:
        a.published(["run_a"])
        assert heard_a == [["run_a"]]  # at once, in the publishing process

        async def b_heard_a() -> bool:
            return ["run_a"] in heard_b

        await eventually(b_heard_a)
        b.published(["run_b"])

        async def a_heard_b() -> bool:
            return ["run_b"] in heard_a

        # Redis delivers a channel's messages in order: hearing b's later message, a has heard its own too.
        await eventually(a_heard_b)
        assert heard_a == [["run_a"], ["run_b"]]
    finally:
        await a.stop()
        await b.stop()
