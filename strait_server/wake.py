"""Wake-up hints for dispatchers: a local event, plus a cross-process hint over Redis pub/sub (default)
or PostgreSQL LISTEN/NOTIFY (STRAIT_WAKE_VIA=postgres).

Hints only shorten the wait; dispatchers also poll, so the queue keeps moving when the hint is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis

from strait_server.faults import DATABASE_ERRORS, REDIS_ERRORS
from strait_server.redis_health import CALL_TIMEOUT_S, Outbox, RedisHealth, RedisPublisher
from strait_server.tasks import Supervisor, cancel_and_wait

log = logging.getLogger(__name__)


class _Transport(Protocol):
    async def publish(self) -> None: ...
    async def listen(self, wake: asyncio.Event, ready: asyncio.Event) -> None: ...


class RedisTransport:
    def __init__(self, redis: aioredis.Redis, namespace: str, health: RedisHealth) -> None:
        self._redis = redis
        self._channel = f"{namespace}:wake"
        # Skips Redis while it does not answer (dispatchers elsewhere poll meanwhile), as event notices do.
        self._publisher = RedisPublisher(redis, self._channel, health, what="wake-up hint")

    async def publish(self) -> None:
        await self._publisher.send(["1"])

    async def listen(self, wake: asyncio.Event, ready: asyncio.Event) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            ready.set()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    wake.set()


class PostgresTransport:
    """NOTIFY after each enqueue, LISTEN on a dedicated connection (not a pooled one)."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, namespace: str) -> None:
        self._pool = pool
        self._url = database_url
        self._channel = f"{namespace}_wake"

    async def publish(self) -> None:
        await self._pool.execute("SELECT pg_notify($1, '')", self._channel)

    async def listen(self, wake: asyncio.Event, ready: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._url)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(self._channel, lambda *_: wake.set())
            ready.set()
            await lost.wait()
            raise OSError("LISTEN connection lost")
        finally:
            await conn.close()


class _Fanout(asyncio.Event):
    """The local wake-up event, which also calls the hub's other subscribers when set (by a local enqueue or a
    hint from another process)."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribers: list[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        for subscriber in self.subscribers:
            subscriber()


class WakeHub:
    def __init__(self, transport: _Transport | None, supervisor: Supervisor | None = None) -> None:
        self._transport = transport
        self._supervisor = supervisor or Supervisor()
        self._local = _Fanout()
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = 0.0
        # Hints asked for while one is being published go out as one more: at most one publish in flight.
        self._outbox = Outbox(self._publish, self._supervisor, name="wake-publisher", max_pending=1,
                              overflow="1") if transport is not None else None

    @property
    def event(self) -> asyncio.Event:
        return self._local

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Also calls `callback` at every wake-up (another consumer than the HTTP dispatcher: the worker plane)."""
        self._local.subscribers.append(callback)

    async def start_listening(self, wait_ready_s: float = 5.0) -> None:
        """Subscribes before returning (so no hint sent after start-up is missed), waiting at most
        `wait_ready_s` seconds: without the hint transport the dispatcher still polls."""
        if self._transport is None:
            return
        ready = asyncio.Event()
        self._task = self._supervisor.spawn(self._listen(ready), name="wake-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), wait_ready_s)

    def start_publishing(self) -> None:
        if self._outbox is not None:
            self._outbox.start()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self._outbox is not None:
            await self._outbox.stop()

    def notify_soon(self) -> None:
        """After an enqueue commits: wake dispatchers here at once, and in other processes through a hint
        published off the caller's path (no caller waits for Redis or PostgreSQL's NOTIFY)."""
        self._local.set()
        if self._outbox is not None:
            self._outbox.put(("1",))

    async def notify(self) -> None:
        """notify_soon(), for callers that expect a coroutine."""
        self.notify_soon()

    async def _publish(self, _batch: list[str]) -> None:
        assert self._transport is not None
        try:
            await asyncio.wait_for(self._transport.publish(), CALL_TIMEOUT_S)
        except (*REDIS_ERRORS, *DATABASE_ERRORS) as exc:
            self._log_error("publish", exc)

    def _log_error(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 30:
            self._last_error_log = now
            log.warning("wake-up hint %s failed; dispatchers fall back to polling: %s", what, exc,
                        extra={"action": "wake_degraded"})

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._transport is not None
        while True:
            try:
                await self._transport.listen(self._local, ready)
            except asyncio.CancelledError:
                raise
            except (*REDIS_ERRORS, *DATABASE_ERRORS) as exc:
                self._log_error("subscription", exc)
                self._local.set()  # something may have been enqueued while we were deaf
                await asyncio.sleep(1.0)
