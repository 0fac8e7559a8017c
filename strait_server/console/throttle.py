"""Turning a stream of changes into redraws: a live view redraws once per burst of changes, at most once per
interval, however fast the changes come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def coalesced(source: AsyncIterator[object], interval: float) -> AsyncIterator[bool]:
    """Yields False once for each burst of items from `source` (items that come while the consumer redraws or
    waits out `interval` make one more yield, not one each), then True once `source` has ended. An error of
    `source` is raised at the next yield."""
    changed = asyncio.Event()
    ended = False
    failure: Exception | None = None

    async def pump() -> None:
        nonlocal ended, failure
        try:
            async for _ in source:
                changed.set()
        except Exception as exc:  # handed to the consumer
            failure = exc
        finally:
            ended = True
            changed.set()

    task = asyncio.create_task(pump())
    try:
        while True:
            await changed.wait()
            changed.clear()
            if failure is not None:
                raise failure
            finished = ended
            yield finished
            if finished:
                return
            await asyncio.sleep(interval)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
