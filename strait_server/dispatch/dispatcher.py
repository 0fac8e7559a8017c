"""The dispatcher: claims due runs in batches, runs them on the executor, and settles the outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

from strait_server import ids
from strait_server.config import Settings
from strait_server.dispatch.circuits import Circuits
from strait_server.dispatch.gates import GatedFirst
from strait_server.dispatch.http import HttpExecutor, failed_outcome
from strait_server.dispatch.settle import SettleBuffer
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import WORKFLOW_RUN_KEY, RunStatus
from strait_server.queue import ClaimedRun, Outcome, Queue
from strait_server.store.circuits import CircuitStore
from strait_server.tasks import Supervisor, cancel_and_wait, first_of
from strait_server.telemetry import Telemetry

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, queue: Queue, executor: HttpExecutor, wake: asyncio.Event, settings: Settings,
                 on_events: Callable[[Iterable[str]], None] = lambda ids: None,
                 telemetry: Telemetry | None = None, supervisor: Supervisor | None = None) -> None:
        self.owner = ids.new_id("disp")
        self._supervisor = supervisor or Supervisor()
        self._telemetry = telemetry or Telemetry()
        self._queue = queue
        self._executor = executor
        self._wake = wake
        self._on_events = on_events
        self._settings = settings
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        # Outcomes the database refused because the run had moved on (canceled, recovered elsewhere).
        self.outcomes_dropped = 0
        self.outcomes_settled = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._gated = GatedFirst(queue.pool, on_events=on_events, metrics=self._telemetry.metrics, wake=self._wake)
        self._circuit_store = CircuitStore(queue.pool)
        self._circuits = Circuits(self._circuit_store, threshold=settings.circuit_failure_threshold,
                                  open_for=settings.circuit_open_for)
        # A gated claim held runs back: a run ending here may free their slot, so come back after settling.
        self._gates_held = False
        # Set by App when this process also fires cron schedules: cleared while a backlog of them is fired.
        self.yield_to: asyncio.Event | None = None
        self._settler = SettleBuffer(queue, self.owner,
                                     flush_interval_s=settings.settle_flush_interval.total_seconds(),
                                     batch_size=settings.settle_batch_size, on_settled=self._on_settled,
                                     supervisor=self._supervisor)

    def accepts_direct(self) -> bool:
        """Whether a trigger in this process may hand its run straight to this dispatcher."""
        return self.direct_room() > 0

    def direct_room(self) -> int:
        """How many runs created in this process may be handed straight to this dispatcher (triggers, the
        workflow engine's moves): up to half its concurrency in flight."""
        if self._stopping.is_set():
            return 0
        return max(0, self._settings.dispatch_concurrency // 2 - len(self._inflight))

    def take_claimed(self, runs: list[ClaimedRun], claim_started_ns: int) -> None:
        """Dispatch runs claimed for this dispatcher in another component's transaction, once it committed."""
        self._telemetry.claimed(runs, claim_started_ns)
        for run in runs:
            self.start_claimed(run)

    def start_claimed(self, run: ClaimedRun) -> None:
        """Dispatch a run this dispatcher already holds the lease of (see RunStore.insert_dispatching).
        Once stopping, the run is left to the shutdown hand-back or the recovery sweep."""
        if not self._stopping.is_set():
            self._inflight[run.id] = asyncio.create_task(self._run_one(run))

    async def start(self) -> None:
        # The heartbeat row must exist before the first claim, or a sweep would take the runs back.
        await self._heartbeat(socket.gethostname(), os.getpid())
        self._settler.start()
        self._tasks = [self._supervisor.spawn(self._claim_loop(), name="claim-loop", may_return=True),
                       self._supervisor.spawn(self._heartbeat_loop(), name="dispatcher-heartbeat")]
        log.info("dispatcher started", extra={"action": "dispatcher_start", "owner": self.owner})

    async def stop(self, drain_timeout_s: float) -> list[str]:
        """Stop claiming, let in-flight runs finish up to the timeout, then hand the rest back."""
        self._stopping.set()
        self._wake.set()
        claim_loop = self._tasks[0] if self._tasks else None
        if claim_loop is not None:
            await asyncio.wait([claim_loop])
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=drain_timeout_s)
        await cancel_and_wait(list(self._inflight.values()))
        await self._settler.stop()
        handed_back = await self._queue.hand_back(self.owner)
        self._on_events(handed_back)
        await cancel_and_wait(self._tasks[1:])
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*DATABASE_ERRORS):
            await self._queue.remove_dispatcher(self.owner)
        if handed_back:
            self._wake.set()
        log.info("dispatcher stopped", extra={"action": "dispatcher_stop", "handed_back": len(handed_back)})
        return handed_back

    def _on_settled(self, outcomes: list[Outcome], settled: set[str]) -> None:
        loop = asyncio.get_running_loop()
        self._on_events(settled)
        self._telemetry.tracing.settled(outcomes, settled)
        self.outcomes_settled += len(settled)
        self.outcomes_dropped += len(outcomes) - len(settled)
        if self._gated.held and settled:
            self._wake.set()
        for o in outcomes:
            if o.run_id in settled and o.to_status is RunStatus.QUEUED:
                # Come back for the retry when its backoff ends, without waiting for the next poll.
                loop.call_later(o.delay_ms / 1000, self._wake.set)

    async def _claim_loop(self) -> None:
        concurrency = self._settings.dispatch_concurrency
        low_water = max(1, min(self._settings.claim_batch_size, concurrency) // 4)
        poll = self._settings.poll_interval.total_seconds()
        while not self._stopping.is_set():
            free = concurrency - len(self._inflight)
            if free < low_water and self._inflight:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            want = min(free, self._settings.claim_batch_size)
            if self.yield_to is not None and not self.yield_to.is_set():
                await self._yield_to_cron(self.yield_to)
                continue
            self._wake.clear()
            claim_started = time.time_ns()
            try:
                claimed = await self._claim(want)
            except DATABASE_ERRORS as exc:
                self._telemetry.metrics.loop_errors.labels("claim").inc()
                log.warning("claim failed: %r", exc, extra={"action": "claim_error"})
                claimed = []
                await asyncio.sleep(min(poll, 1.0))
            except Exception:
                # A bug, or a job row nobody foresaw: a restart would meet it again, so the claim is retried (and
                # counted) rather than the process stopped.
                self._telemetry.metrics.loop_errors.labels("claim").inc()
                log.exception("claim failed unexpectedly", extra={"action": "claim_error"})
                claimed = []
                await asyncio.sleep(min(poll, 1.0))
            else:
                try:  # after the claim, not inside its error handling: claimed runs are never dropped here
                    self._telemetry.claimed(claimed, claim_started)
                except Exception:
                    log.exception("claim telemetry failed", extra={"action": "telemetry_error"})
            self._on_events(run.id for run in claimed)
            for run in claimed:
                self._inflight[run.id] = asyncio.create_task(self._run_one(run))
            if len(claimed) == want or self._stopping.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)

    async def _yield_to_cron(self, idle: asyncio.Event) -> None:
        """The cron scheduler here is firing a backlog (for a bounded time, see cron.py): wait for it, or for
        shutdown."""
        await first_of(idle.wait(), self._stopping.wait())

    async def _claim(self, want: int) -> list[ClaimedRun]:
        return await self._gated.claim(self._gated.claimer.claim(self.owner, want),
                                       lambda _, rest: self._queue.claim(self.owner, rest), want)

    async def _run_one(self, run: ClaimedRun) -> None:
        started = time.perf_counter()
        outcome = await self._circuit_gate(run)
        if outcome is None:
            with self._telemetry.tracing.dispatch(run) as span:  # current while the executor sends the request
                try:
                    outcome = await self._executor.execute(run)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Never leave a run executing because of a bug here: settle it as a retryable failure.
                    log.exception("dispatch failed unexpectedly",
                                  extra={"action": "dispatch_error", "run_id": run.id})
                    outcome = failed_outcome(run, f"internal dispatch error: {type(exc).__name__}")
                self._telemetry.dispatched(run, outcome, time.perf_counter() - started, span)
            await self._circuit_record(run, outcome)
        try:
            # A workflow step's next step waits for this outcome: write it without waiting for others to join.
            self._settler.add(outcome, at_once=self._gated.held or WORKFLOW_RUN_KEY in run.metadata)
        finally:
            self._inflight.pop(run.id, None)
            self._slot_freed.set()

    async def _circuit_gate(self, run: ClaimedRun) -> Outcome | None:
        try:
            return await self._circuits.admit(run)
        except DATABASE_ERRORS as exc:
            log.warning("circuit check failed, dispatching anyway: %r", exc, extra={"action": "circuit_error"})
        except Exception:
            # The run is claimed: whatever goes wrong here, it must still be dispatched and settled.
            log.exception("circuit check failed, dispatching anyway", extra={"action": "circuit_error"})
        return None

    async def _circuit_record(self, run: ClaimedRun, outcome: Outcome) -> None:
        try:
            note = await self._circuits.record(run, outcome)
            if note is not None:
                await self._circuit_store.note(run.id, note)
                self._on_events([run.id])
                self._wake.set()  # a closed circuit made its waiting runs due
        except DATABASE_ERRORS as exc:
            log.warning("recording a circuit outcome failed: %r", exc, extra={"action": "circuit_error"})
        except Exception:
            # The outcome is settled next whatever happens here: dropping it would leave the run executing.
            log.exception("recording a circuit outcome failed", extra={"action": "circuit_error"})

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.heartbeat_interval.total_seconds()
        host, pid = socket.gethostname(), os.getpid()
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat(host, pid)
            except DATABASE_ERRORS as exc:
                self._telemetry.metrics.loop_errors.labels("heartbeat").inc()
                log.warning("dispatcher heartbeat failed: %r", exc, extra={"action": "heartbeat_error"})

    async def _heartbeat(self, host: str, pid: int) -> None:
        """Renews this dispatcher's liveness, durably: so the settles written before it are on disk too, unless
        the database server restarted since the last heartbeat, in which case they are written again."""
        await self._settler.heartbeat(lambda: self._queue.heartbeat(self.owner, host, pid))
