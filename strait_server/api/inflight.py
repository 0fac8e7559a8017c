"""Bytes of requests being handled at once, per server process and per caller.

A 1,000-run BatchTriggerJob of 7 MB costs several times its size in memory while it is decoded, checked and
written; sixty of them at once took a server from 115 MB to 1.3 GB. Past the budget a request is refused at
once, before it is decoded (RESOURCE_EXHAUSTED with a retry delay), so memory stays bounded whatever the burst.
Small requests, the vast majority, are not counted: they cost nothing here.
"""

from __future__ import annotations

import asyncio
import gc
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from prometheus_client import Gauge

from strait_server import errors

# Requests under this size are not counted.
SMALL_BYTES = 64 * 1024
COLLECT_AFTER_BYTES = 64 * 1024 * 1024
COLLECT_GENERATION = 2
RETRY_AFTER_S = 1.0


class InFlightBytes:
    def __init__(self, *, server_max: int, caller_max: int) -> None:
        self._server_max = server_max
        self._caller_max = caller_max
        self._total = 0
        self._released = 0
        self._per_caller: dict[str, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return self._total

    @contextmanager
    def hold(self, caller: str, size: int) -> Iterator[None]:
        """Counts `size` bytes for the duration of the block; ResourceExhausted when over a budget."""
        if size < SMALL_BYTES:
            yield
            return
        if self._per_caller[caller] + size > self._caller_max:
            self._release(caller, 0)
            raise _refused(f"this caller's requests in progress exceed {self._caller_max:,} bytes", caller)
        if self._total + size > self._server_max:
            self._release(caller, 0)
            raise _refused(f"requests in progress on this server exceed {self._server_max:,} bytes", "server")
        self._total += size
        self._per_caller[caller] += size
        try:
            yield
        finally:
            self._release(caller, size)

    def _release(self, caller: str, size: int) -> None:
        self._total -= size
        self._released += size
        if self._released >= COLLECT_AFTER_BYTES:
            # gRPC keeps a handled request's bytes in reference cycles (its exception handling), which the
            # collector, tuned to run rarely (cli._tune_gc), would free only much later: a burst of refused
            # 7 MB batches grew the server by gigabytes. One collection per so many bytes handled costs little.
            self._released = 0
            gc.collect(COLLECT_GENERATION)
        left = self._per_caller[caller] - size
        if left:
            self._per_caller[caller] = left
        else:
            del self._per_caller[caller]


class Admission:
    """Calls of a method whose requests may be large (BatchTriggerJob) are read a few at a time.

    The byte budget above judges a request once it is read, and by then a burst has already cost its bytes:
    sixty 7 MB batches sent at once are 420 MB read before any is refused. A call admitted here is read; the
    others wait, unread, in arrival order (HTTP/2 flow control holds their bytes back in the caller), and are
    refused with a retry delay when they waited `max_wait` seconds. A request that turns out small once read
    gives its slot back at once (Slot.release): only large ones are handled a few at a time, so that many
    small batches still overlap their reads and their inserts.
    """

    def __init__(self, slots: int, max_wait: float, waiting: Gauge | None = None) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_wait = max_wait
        self._waiting = waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        if self._waiting is not None:
            self._waiting.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), self._max_wait)
        except TimeoutError:
            raise _refused(f"this request waited over {self._max_wait:g}s for its turn to be read",
                           "server") from None
        finally:
            if self._waiting is not None:
                self._waiting.dec()
        held = Slot(self._slots)
        try:
            yield held
        finally:
            held.release()


class Slot:
    """An admitted call's place; release() gives it back early (idempotent)."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots: asyncio.Semaphore | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()
            self._slots = None


def _refused(why: str, subject: str) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(f"{why}; retry in {RETRY_AFTER_S:g}s", reason="REQUEST_BYTES_IN_PROGRESS",
                                    retry_after_seconds=RETRY_AFTER_S, quota_subject=subject)
