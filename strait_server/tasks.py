"""Background tasks: supervised while they run, stopped reliably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancels the tasks and waits until every one has ended.

    Cancels again while one is still running: a cancellation can be lost (Python 3.11's `wait_for` drops
    one that races with its inner future; some libraries catch it while cleaning up), and one lost
    cancellation must not hang a shutdown.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so that asyncio does not log it as never retrieved


async def first_of(*aws: Coroutine[Any, Any, Any]) -> None:
    """Waits until the first of `aws` is done, and cancels the others."""
    waiters = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(waiters)


class Supervisor:
    """Starts a process's background loops and notices when one ends by itself.

    Loops run until they are cancelled. One that returns or raises has died, and a process must not go on
    without it: a dead heartbeat beside a live claim loop gets its runs recovered elsewhere and delivered twice,
    a dead settle loop leaves every outcome unwritten. So the death is logged with its traceback and `crashed`
    is set; `strait serve` then stops and exits non-zero, for its orchestrator to restart it. Loops that are
    meant to outlive errors (the database being away) catch those themselves, log them and count them.
    """

    def __init__(self) -> None:
        self.crashed = asyncio.Event()
        self.failure: str = ""  # the first loop that died, and how

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str, may_return: bool = False) -> asyncio.Task[None]:
        """Starts a loop. `may_return`: it ends by returning when told to stop, which is no failure."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended_returnable if may_return else self._ended)
        return task

    def _ended_returnable(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._ended(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            log.critical("background loop %s returned; stopping the process", task.get_name(),
                         extra={"action": "loop_died", "loop": task.get_name()})
        else:
            log.critical("background loop %s crashed; stopping the process", task.get_name(), exc_info=exc,
                         extra={"action": "loop_died", "loop": task.get_name()})
        if not self.failure:
            self.failure = f"{task.get_name()}: {exc!r}" if exc is not None else f"{task.get_name()} returned"
        self.crashed.set()
