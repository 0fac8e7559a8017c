"""Circuit breakers per (project, endpoint URL), shared by every dispatcher through PostgreSQL.

closed: dispatches go through; each failed one (5xx, 408, 429, connection error, timeout) adds to the
endpoint's consecutive failures, each success forgets them. At the threshold the circuit opens: runs for the
endpoint are put back in the queue without using an attempt, to come back when the open period ends. Then
one dispatcher wins the probe (half-open): its outcome closes the circuit or opens it for another period,
while the other runs keep waiting.

The hot path reads a local copy of the (small) table of failing endpoints, refreshed every second: a run for
a healthy endpoint costs no query. A run for a failing one reads its circuit's row, and only failures,
probes and the first success after failures write.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from strait_server.faults import DATABASE_ERRORS
from strait_server.model import ErrorClass, RunStatus
from strait_server.queue import ClaimedRun, Outcome
from strait_server.store.circuits import Circuit, CircuitStore

# Failures that say the endpoint is unwell; a 4xx other than 408/429 says the request was wrong.
COUNTED = frozenset({ErrorClass.SERVER, ErrorClass.CONNECTION, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMITED,
                     ErrorClass.REQUEST_TIMEOUT})
# How long a run waits when a probe's state cannot be read (it closed or reopened meanwhile): look again soon.
PROBE_WAIT = timedelta(seconds=2)


def snoozed(run: ClaimedRun, until: datetime, now: datetime, *, probing: bool = False) -> Outcome:
    """The run goes back to the queue until `until`, its attempt not used; its error becomes its wait_reason
    (see SETTLE): which circuit holds it, and until when."""
    delay_ms = max(0, int((until - now).total_seconds() * 1000))
    state = "half-open (another run probes it)" if probing else "open"
    return Outcome(run_id=run.id, attempt=run.attempt, to_status=RunStatus.QUEUED, output=None,
                   error=f"endpoint circuit open: not attempted, next try at {until.isoformat()} "
                         f"(the circuit of {run.endpoint_url} is {state})",
                   error_class=ErrorClass.CIRCUIT_OPEN, delay_ms=delay_ms, record={})


class Circuits:
    def __init__(self, store: CircuitStore, *, threshold: int, open_for: timedelta,
                 refresh_s: float = 1.0) -> None:
        self._store = store
        self._threshold = threshold
        self._open_for = open_for
        self._refresh_s = refresh_s
        self._known: dict[tuple[str, str], Circuit] = {}
        self._loaded_at = -1e9
        self._loading: asyncio.Lock = asyncio.Lock()
        self._reload: asyncio.Future[None] | None = None  # the background reload, kept from the collector

    async def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at < self._refresh_s:
            return
        if self._loaded_at > 0:
            # A copy exists: reload it beside this dispatch instead of in front of it (a query before every
            # 50th dispatch at 50 runs/s showed in the idle latency's p99).
            if self._reload is None or self._reload.done():
                self._reload = asyncio.ensure_future(self._load())
            return
        await self._load()

    async def _load(self) -> None:
        async with self._loading:
            if time.monotonic() - self._loaded_at < self._refresh_s:
                return
            try:
                circuits = await self._store.load()
            except DATABASE_ERRORS:
                return  # keep the last copy; breakers are advisory, dispatch must go on
            self._known = {(c.project_id, c.endpoint_url): c for c in circuits}
            self._loaded_at = time.monotonic()

    async def admit(self, run: ClaimedRun) -> Outcome | None:
        """None: dispatch the run. Otherwise the outcome that puts it back until its endpoint may be tried."""
        if not self._enabled:
            return None
        await self._fresh()
        key = (run.project_id, run.endpoint_url)
        if key not in self._known or self._known[key].state == "closed":
            return None
        # Failing endpoint: decide on the current row, not the copy (it may have been reset or probed since).
        c = await self._store.read(run.project_id, run.endpoint_url)
        if c is None:
            self._known.pop(key, None)
            return None
        self._known[key] = c
        now = datetime.now(UTC)
        if c.state == "open" and c.open_until is not None and c.open_until > now:
            return snoozed(run, c.open_until, now)
        if c.state == "half_open" and c.probe_until is not None and c.probe_until > now:
            # Until the probe's deadline: its success closes the circuit and makes the waiting runs due.
            return snoozed(run, c.probe_until, now, probing=True)
        probe_for = timedelta(milliseconds=run.timeout_ms) + timedelta(seconds=10)
        won = await self._store.try_probe(run.project_id, run.endpoint_url, probe_for)
        if won is not None:
            self._known[key] = won
            return None  # this dispatch is the probe
        current = await self._store.read(run.project_id, run.endpoint_url)
        if current is None:
            self._known.pop(key, None)
            return None  # closed meanwhile
        self._known[key] = current
        probing = current.state == "half_open"
        until = current.probe_until if probing else current.open_until
        return snoozed(run, until if until is not None and until > now else now + PROBE_WAIT, now, probing=probing)

    async def record(self, run: ClaimedRun, outcome: Outcome) -> str | None:
        """Counts the dispatch's outcome; returns a message for the run's events when the circuit changed."""
        if not self._enabled or outcome.error_class == "circuit_open":
            return None
        key = (run.project_id, run.endpoint_url)
        if outcome.error_class in COUNTED:
            circuit, opened = await self._store.failed(run.project_id, run.endpoint_url, self._threshold,
                                                       self._open_for, outcome.error)
            self._known[key] = circuit
            if opened and circuit.open_until is not None:
                return (f"endpoint circuit opened after {circuit.consecutive_failures} consecutive failures; "
                        f"runs for {run.endpoint_url} wait until {circuit.open_until.isoformat()}")
            return None
        if outcome.error_class or key not in self._known:
            return None  # a client error says nothing of the endpoint's health; nothing to forget
        was = await self._store.succeeded(run.project_id, run.endpoint_url)
        self._known.pop(key, None)
        if was in ("open", "half_open"):
            return f"endpoint circuit closed: {run.endpoint_url} answered"
        return None

    @property
    def _enabled(self) -> bool:
        return self._threshold > 0
