"""A server process's life: start the App, run until a stop signal (or a dead loop), stop it in order."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from strait_server.app import App
from strait_server.tasks import first_of

log = logging.getLogger("strait")

GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_ARENA_MAX = -8
PARENT_CHECK_INTERVAL_S = 0.5


class LoopDied(Exception):
    """A background loop of the server died; the process exits with status 1 (see Supervisor)."""


def stop_signals(hangup_ignored: bool) -> tuple[signal.Signals, ...]:
    """SIGTERM, SIGINT and SIGHUP (a closed terminal) stop the server gracefully; SIGHUP not when the process
    was started ignoring it (`nohup`), which asks it to outlive its terminal."""
    if hangup_ignored or not hasattr(signal, "SIGHUP"):
        return (signal.SIGTERM, signal.SIGINT)
    return (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Sets `stop` once the process that started this one has ended (this one was handed to another parent):
    a development server does not outlive the terminal, IDE or test run that started it."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("the parent process ended; shutting down", extra={"action": "parent_gone"})
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK_INTERVAL_S)


async def run_until_stopped(app: App, on_started: Callable[[], Awaitable[None]] | None = None, *,
                            signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
                            stop: asyncio.Event | None = None) -> None:
    """Starts `app` and serves until one of `signals` arrives, `stop` is set, or a background loop dies."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        tune_gc()
        tune_malloc()
        if on_started is not None:
            await on_started()
        await first_of(stop.wait(), app.supervisor.crashed.wait())
        log.info("shutting down", extra={"action": "shutdown"})
    finally:
        await app.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
    if app.supervisor.crashed.is_set():
        raise LoopDied(app.supervisor.failure)


def tune_gc() -> None:
    """Once started: what start-up allocated (modules, protobuf descriptors, pools) is moved out of the
    collector's sight, and young collections run less often. A 1,000-run batch allocates thousands of
    short-lived objects, and collections were 6% of the server's CPU in the batch profile."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, second, third)


def tune_malloc() -> None:
    """glibc only: buffers of 128 KiB and more (request messages, payloads) are mapped and unmapped on their
    own, and at most two arenas serve the gRPC threads. By default glibc raises its mapping threshold after the
    first large free and carves later large buffers out of the heap, which it rarely gives back: a burst of
    7 MB batches left the server at 860 MB instead of 346 MB. (MALLOC_* variables, when set, take precedence.)"""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to tune
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, 2)
