"""How a live workflow run page turns the run's changes into redraws (strait_server.console.throttle): a burst of
changes makes one redraw, redraws are spaced by the interval, the end of the changes makes a last one, and a
failure of the source reaches the page's stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from strait_server.console.throttle import coalesced

INTERVAL = 0.2


async def from_queue(queue: asyncio.Queue[object]) -> AsyncIterator[object]:
    while (item := await queue.get()) is not None:
        if isinstance(item, Exception):
            raise item
        yield item


async def test_a_burst_of_changes_makes_one_redraw_and_redraws_are_spaced_by_the_interval() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    redraws = coalesced(from_queue(queue), INTERVAL)
    queue.put_nowait("first")
    assert await asyncio.wait_for(anext(redraws), 5) is False
    first = time.monotonic()
    for i in range(99):  # changes that come while the page redraws
        queue.put_nowait(i)
    # One more redraw for all of them, no sooner than the interval after the first.
    assert await asyncio.wait_for(anext(redraws), 5) is False
    assert time.monotonic() - first >= INTERVAL * 0.9
    queue.put_nowait(None)  # the run's watch ended: the next redraw is the last (not one of 99 pending)
    assert await asyncio.wait_for(anext(redraws), 5) is True
    with pytest.raises(StopAsyncIteration):
        await anext(redraws)


async def test_a_failing_source_fails_the_redraws_and_closing_them_stops_the_source() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    queue.put_nowait(RuntimeError("the watch broke"))
    with pytest.raises(RuntimeError, match="the watch broke"):
        await asyncio.wait_for(anext(coalesced(from_queue(queue), INTERVAL)), 5)

    stopped = asyncio.Event()

    async def endless() -> AsyncIterator[object]:
        try:
            while True:
                yield 1
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    redraws = coalesced(endless(), INTERVAL)
    assert await asyncio.wait_for(anext(redraws), 5) is False
    await redraws.aclose()  # the viewer went away
    await asyncio.wait_for(stopped.wait(), 5)
