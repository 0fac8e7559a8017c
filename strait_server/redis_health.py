"""Whether Redis answers, and messages to it published off the request path.

Redis only speeds Strait up (wake-up hints, watch notifications, shared rate limits), so nothing may wait on
it: a Redis that stops answering without closing its connections (frozen, or a network path that drops
packets) would otherwise hold every caller for a whole socket timeout. A ping with a short timeout every
second tells callers to leave Redis alone; publishes are coalesced into one task per channel, so a burst of
commits costs one message in flight and one connection, whatever the number of callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

from strait_server.faults import REDIS_ERRORS
from strait_server.tasks import Supervisor, cancel_and_wait

log = logging.getLogger(__name__)

# How long one Redis call may take before Redis counts as not answering.
CALL_TIMEOUT_S = 0.5


class RedisHealth:
    def __init__(self, redis: aioredis.Redis, supervisor: Supervisor, *, interval_s: float = 1.0) -> None:
        self._redis = redis
        self._supervisor = supervisor
        self._interval = interval_s
        self.healthy = True
        self._listeners: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name="redis-health")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    def failed(self) -> None:
        """A caller's Redis call failed or timed out: stop using Redis until the next ping succeeds."""
        self._set(False)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._redis.ping(), CALL_TIMEOUT_S)
            except REDIS_ERRORS:
                self._set(False)
            else:
                self._set(True)
            await asyncio.sleep(self._interval)

    def _set(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            log.info("Redis answers again", extra={"action": "redis_healthy"})
        else:
            log.warning("Redis does not answer; going on without it", extra={"action": "redis_unhealthy"})
        for listener in self._listeners:
            listener(healthy)


class Outbox:
    """Items for one consumer, sent by one supervised task: what accumulates while a send is in flight goes out
    together in the next one. `put` never waits; past `max_pending` items the batch collapses to `overflow`."""

    def __init__(self, send: Callable[[list[str]], Awaitable[None]], supervisor: Supervisor, *, name: str,
                 max_pending: int = 10_000, overflow: str = "*") -> None:
        self._send = send
        self._supervisor = supervisor
        self._name = name
        self._max = max_pending
        self._overflow = overflow
        self._items: list[str] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Sends what is pending (briefly), then ends."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self._items:
            await self._flush()

    def put(self, items: Iterable[str]) -> None:
        if len(self._items) < self._max:
            self._items.extend(items)
            if len(self._items) >= self._max:
                self._items = [self._overflow]
        self._ready.set()

    async def _loop(self) -> None:
        while True:
            await self._ready.wait()
            await self._flush()

    async def _flush(self) -> None:
        self._ready.clear()
        batch, self._items = self._items, []
        if batch:
            await self._send(batch)


class RedisPublisher:
    """Publishes an Outbox's batches to one channel, skipping Redis while it does not answer (the receivers then
    poll, or wait for their next poll: these messages are hints, never the data)."""

    def __init__(self, redis: aioredis.Redis, channel: str, health: RedisHealth, *, what: str) -> None:
        self._redis = redis
        self._channel = channel
        self._health = health
        self._what = what
        self._last_log = 0.0

    async def send(self, batch: list[str]) -> None:
        if not self._health.healthy:
            return
        try:
            await asyncio.wait_for(self._redis.publish(self._channel, "\n".join(dict.fromkeys(batch))),
                                   CALL_TIMEOUT_S)
        except REDIS_ERRORS as exc:
            self._health.failed()
            now = time.monotonic()
            if now - self._last_log > 30:
                self._last_log = now
                log.warning("%s publish failed; receivers fall back to polling: %r", self._what, exc,
                            extra={"action": "publish_degraded"})
