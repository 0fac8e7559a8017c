"""Wake-up hints for dispatchers: a local event, plus Redis pub/sub across processes.

Hints only shorten the wait; dispatchers also poll, so the queue keeps moving when Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class WakeHub:
    def __init__(self, redis: aioredis.Redis | None, namespace: str) -> None:
        self._redis = redis
        self._channel = f"{namespace}:wake"
        self._local = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = 0.0
        self._pending: set[asyncio.Task[None]] = set()  # strong references to fire-and-forget publishes

    @property
    def event(self) -> asyncio.Event:
        return self._local

    async def start_listening(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(), name="wake-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify_soon(self) -> None:
        """notify() without waiting for Redis: the caller's answer should not wait for the publish."""
        self._local.set()
        if self._redis is not None:
            task = asyncio.create_task(self.notify())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def notify(self) -> None:
        """After an enqueue commits: wake dispatchers here and in other processes."""
        self._local.set()
        if self._redis is None:
            return
        try:
            await self._redis.publish(self._channel, b"1")
        except (RedisError, OSError) as exc:
            self._log_error("publish", exc)

    def _log_error(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 30:
            self._last_error_log = now
            log.warning("redis %s failed; dispatchers fall back to polling: %s", what, exc,
                        extra={"action": "wake_degraded"})

    async def _listen(self) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._local.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._log_error("subscribe", exc)
                await asyncio.sleep(1.0)
