"""Run-event notifications: "new events of run X are committed", locally and across processes.

Events themselves are only ever read from run_events (by per-run sequence), so a watcher can never skip
or repeat one; a message on the Redis channel <namespace>:events, listing the run ids whose events were
just committed (one message per commit, however many runs it touched), only wakes their watchers. A message
starts with a line naming the bus that sent it ("@<random id>"): a process ignores its own messages, whose
watchers it woke when it published them.
Watchers register before their first read, so an event committed while a stream is being set up is seen
either by that read or through the wake-up that follows it. Without Redis, watchers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

import redis.asyncio as aioredis

from strait_server.faults import REDIS_ERRORS
from strait_server.redis_health import Outbox, RedisHealth, RedisPublisher
from strait_server.tasks import Supervisor, cancel_and_wait

log = logging.getLogger(__name__)

# Published instead of run ids when too many piled up while Redis was slow: every watcher looks.
_EVERY_RUN = "*"
# The first line of a message names its sender: never a run id, which starts with "run_".
_ORIGIN_PREFIX = "@"


class EventBus:
    def __init__(self, redis: aioredis.Redis | None, namespace: str, supervisor: Supervisor | None = None,
                 health: RedisHealth | None = None) -> None:
        self._redis = redis
        self._supervisor = supervisor or Supervisor()
        self._health = health
        self._channel = f"{namespace}:events"
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._feed_waiters: set[asyncio.Event] = set()  # project feeds: woken by any run's events
        # Called with the runs of every wake-up (None: any run may have changed): the worker plane.
        self._run_listeners: list[Callable[[list[str] | None], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._outbox: Outbox | None = None
        self._origin = _ORIGIN_PREFIX + secrets.token_hex(8)
        if redis is not None and health is not None:
            # One message per batch of commits, off the caller's path (see redis_health.py).
            publisher = RedisPublisher(redis, self._channel, health, what="event")

            async def send(batch: list[str]) -> None:
                await publisher.send([self._origin, *batch])
            self._outbox = Outbox(send, self._supervisor, name="event-publisher", overflow=_EVERY_RUN)
            # Redis stopped answering: nothing may come through the subscription, so watchers look now, and
            # poll until it answers again; when it does, whatever was missed is read.
            health.on_change(lambda _healthy: self._wake_everyone())
        self._last_error_log = 0.0
        self._subscribed = False

    @property
    def healthy(self) -> bool:
        """False while the subscription is down or Redis does not answer: watchers then poll the table."""
        return self._subscribed and (self._health is None or self._health.healthy)

    def start_publishing(self) -> None:
        if self._outbox is not None:
            self._outbox.start()

    async def start(self, wait_ready_s: float = 5.0) -> None:
        """Subscribes, for watchers in this process."""
        if self._redis is None:
            return
        ready = asyncio.Event()
        self._task = self._supervisor.spawn(self._listen(ready), name="event-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), wait_ready_s)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self._outbox is not None:
            await self._outbox.stop()

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever new events of `run_id` may have been committed."""
        woken = asyncio.Event()
        self._waiters[run_id].add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[run_id]

    @contextlib.contextmanager
    def watch_all(self) -> Iterator[asyncio.Event]:
        """An event set whenever new events of any run may have been committed (for project feeds,
        which filter by project themselves: run ids do not say which project they belong to)."""
        woken = asyncio.Event()
        self._feed_waiters.add(woken)
        try:
            yield woken
        finally:
            self._feed_waiters.discard(woken)

    def on_runs(self, listener: Callable[[list[str] | None], None]) -> None:
        """Calls `listener` with the run ids of every wake-up, here and (through Redis) from other processes;
        with None when any run may have changed (Redis came back, or too many ids piled up)."""
        self._run_listeners.append(listener)

    def _wake_runs(self, run_ids: Iterable[str]) -> None:
        if self._run_listeners:
            run_ids = list(run_ids)
            for listener in self._run_listeners:
                listener(run_ids)
        if self._waiters:
            for run_id in run_ids:
                for woken in self._waiters.get(run_id, ()):
                    woken.set()
        for woken in self._feed_waiters:
            woken.set()

    def _wake_everyone(self) -> None:
        for listener in self._run_listeners:
            listener(None)
        for waiters in list(self._waiters.values()):
            for woken in waiters:
                woken.set()
        for woken in self._feed_waiters:
            woken.set()

    def published(self, run_ids: Iterable[str]) -> None:
        """After a commit that wrote events of these runs: wake watchers here at once, and elsewhere
        through Redis without making the caller wait for it."""
        ids = list(run_ids)
        if not ids:
            return
        self._wake_runs(ids)
        if self._outbox is not None:
            self._outbox.put(ids)

    def _received(self, text: str) -> None:
        lines = text.split("\n")
        if lines[0].startswith(_ORIGIN_PREFIX):
            if lines[0] == self._origin:
                # Our own: published() woke this process's watchers already. (Woken again, the worker plane
                # would look up every run it had just claimed, to see whether it was canceled meanwhile.)
                return
            lines = lines[1:]
        if lines == [_EVERY_RUN]:
            self._wake_everyone()
        else:
            self._wake_runs(lines)

    def _log_error(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 30:
            self._last_error_log = now
            log.warning("event %s failed; watchers fall back to polling: %s", what, exc,
                        extra={"action": "events_degraded"})

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed = True
                    ready.set()
                    # Anything published while we were deaf is caught by the watchers' next read.
                    self._wake_everyone()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self._received(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                self._subscribed = False
                self._log_error("subscription", exc)
                self._wake_everyone()
                await asyncio.sleep(1.0)
