"""The gated claim: starting flow-controlled runs within their job's limits.

A run of a job with `max_concurrency`, `max_concurrency_per_key`, a dispatch rate limit or an execution
window waits in the ready queue under a gate (its job id, or "<job id>/<key>"), where the plain claim never
looks. A dispatcher with free slots claims gated runs in one transaction:

1. list the gates with queued runs (a loose index scan: one probe per gate, not per queued run);
2. take each involved job's advisory lock, in a fixed order: claims of the same job are serialised across
   every process, and the next statement's snapshot sees every lease a previous holder committed;
3. count executing runs per job and key from their leases (no counter that could drift) and read the rate
   windows;
4. defer runs whose execution window is closed (queued -> delayed until it opens); take the best due runs of
   each gate up to what its limits allow, and claim them; record why the others wait.

Limits are therefore exact however many dispatchers run, and a held gate costs one probe per claim, not a
busy loop: the dispatcher sleeps until a run of its own ends, a wake-up hint, or its poll.

The worker plane claims flow-controlled runs of worker jobs the same way (claim_routes), from the gates of
the routes its connected workers handle ('w/<queue>/<job id>/<key>', see strait_gate), each job also capped
by its workers' free slots.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from strait_server import schedule
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import WINDOW_WAIT_PREFIX
from strait_server.queue import (
    CLAIM_IDS,
    DEFER_TO_WINDOW,
    GATE_HEADS,
    GATE_STATE,
    GATES_WAITING,
    LOCK_JOBS,
    MARK_WAITING,
    ROUTE_GATES_WAITING,
    SAVE_RATE_WINDOWS,
    ClaimedRun,
    claimed_from_row,
)
from strait_server.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Gate:
    gate: str
    job_id: str
    key: str
    max_concurrency: int
    max_per_key: int
    rate_max: int
    rate_window: timedelta
    window_cron: str
    timezone: str


@dataclass(kw_only=True)
class GatedClaim:
    runs: list[ClaimedRun]
    # Runs whose events changed without being claimed (deferred to a window, or told why they wait).
    touched: list[str]
    # How many of those moved queued -> delayed (their job's execution window is closed).
    deferred: int
    # Some gate had due runs that its limits held back.
    held: bool
    # Seconds until a held rate window ends (the dispatcher comes back then), if one does.
    retry_in: float | None


def _gate(row: Any) -> Gate:
    gate = row["gate"]
    if gate.startswith("w/"):  # a worker job's: 'w/<queue>/<job id>/<key>'
        _, _, job_id, key = gate.split("/", 3)
    else:
        job_id, _, key = gate.partition("/")
    return Gate(gate=gate, job_id=job_id, key=key, max_concurrency=row["max_concurrency"],
                max_per_key=row["max_concurrency_per_key"], rate_max=row["rate_limit_max"],
                rate_window=timedelta(milliseconds=row["rate_limit_window_ms"]),
                window_cron=row["execution_window_cron"], timezone=row["timezone"])


@dataclass
class _Round:
    """One gated claim's view of the limits, read under the jobs' locks."""

    now: datetime
    executing: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_key: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    windows: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # rate window start, starts in it
    job_free: dict[str, float] = field(default_factory=dict)
    # What each job's workers can still take (worker jobs; unbounded for HTTP ones): a cap, not a limit.
    slots_free: dict[str, float] = field(default_factory=dict)
    rate_left: dict[str, float] = field(default_factory=dict)
    retry_at: datetime | None = None
    stored: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # rate windows as last saved

    def read(self, rows: list[Any]) -> None:
        for r in rows:
            if r["kind"] == "job":
                self.executing[r["job_id"]] = r["n"]
            elif r["kind"] == "key":
                self.per_key[(r["job_id"], r["concurrency_key"])] = r["n"]
            else:
                self.stored[r["job_id"]] = (r["since"], r["n"])

    def open_job(self, g: Gate, slots: float = math.inf) -> None:
        """Sets what the job may still start: its concurrency headroom, what is left of its rate window, and
        what its workers can take."""
        self.slots_free[g.job_id] = slots
        self.job_free[g.job_id] = (g.max_concurrency - self.executing[g.job_id]) if g.max_concurrency else math.inf
        if not (g.rate_max and g.rate_window):
            self.rate_left[g.job_id] = math.inf
            return
        start, started = self.stored.get(g.job_id, (self.now, 0))
        if start + g.rate_window <= self.now:
            start, started = self.now, 0
        self.windows[g.job_id] = (start, started)
        self.rate_left[g.job_id] = g.rate_max - started
        if started >= g.rate_max:
            ends = start + g.rate_window
            self.retry_at = ends if self.retry_at is None else min(self.retry_at, ends)

    def _allowed(self, g: Gate) -> float:
        key_free = (g.max_per_key - self.per_key[(g.job_id, g.key)]) if g.max_per_key and g.key else math.inf
        return min(key_free, self.job_free[g.job_id], self.rate_left[g.job_id])

    def quota(self, g: Gate, limit: int) -> int:
        return int(max(0, min(self._allowed(g), self.slots_free[g.job_id], limit)))

    def held_by_limits(self, g: Gate) -> bool:
        """The gate's limits let none of its runs start (a gate held only by busy workers is not)."""
        return self._allowed(g) <= 0

    def take(self, job_id: str) -> bool | None:
        """Counts one start against the job's limits and its workers' slots: True if they allow it; False if
        its limits do not, None if only its workers are busy."""
        if self.job_free[job_id] <= 0 or self.rate_left[job_id] <= 0:
            return False
        if self.slots_free[job_id] <= 0:
            return None
        self.job_free[job_id] -= 1
        self.rate_left[job_id] -= 1
        self.slots_free[job_id] -= 1
        if job_id in self.windows:
            start, started = self.windows[job_id]
            self.windows[job_id] = (start, started + 1)
        return True

    def why_held(self, g: Gate) -> str:
        if self.rate_left[g.job_id] <= 0 and g.job_id in self.windows:
            start, _ = self.windows[g.job_id]
            return (f"rate limit: {g.rate_max} starts per {g.rate_window.total_seconds():g}s reached; "
                    f"next window at {(start + g.rate_window).isoformat()}")
        if self.job_free[g.job_id] <= 0:
            return f"concurrency limit: {g.max_concurrency} runs of this job executing (max_concurrency)"
        return f"concurrency limit: {g.max_per_key} runs with concurrency key {g.key!r} executing"


def _choose(heads: list[Any], gates: dict[str, Gate], state: _Round, limit: int, reasons: dict[str, str],
            wanted: dict[str, int], quota: dict[str, int]) -> tuple[list[str], bool]:
    """The runs to claim among the gates' heads, best first, within the limits (the held gates' reasons are
    added to `reasons`); and whether some gate gave all it was asked for: it may have more runs waiting behind
    its limits, though none was refused here, so a run of it ending must bring the dispatcher back at once."""
    chosen: list[str] = []
    offered: dict[str, int] = defaultdict(int)
    for h in heads:
        offered[h["gate"]] += 1
    taken: dict[str, int] = defaultdict(int)
    for h in sorted(heads, key=lambda h: (-h["priority"], h["run_at"], h["run_id"])):
        if len(chosen) >= limit:
            break
        gate = gates[h["gate"]]
        took = state.take(gate.job_id)
        if took:
            chosen.append(h["run_id"])
            taken[gate.gate] += 1
        elif took is False:
            reasons.setdefault(gate.gate, state.why_held(gate))
    full = any(taken[name] == n == offered[name] for name, n in wanted.items() if n == quota[name])
    return chosen, full


def _nothing() -> GatedClaim:
    return GatedClaim(runs=[], touched=[], deferred=0, held=False, retry_in=None)


class GatedClaimer:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # Gates are visited round-robin, a batch's worth per claim: with thousands of gates (one per
        # concurrency key) a claim costs O(batch), not O(gates). The last gate this claimer visited:
        self._cursor = ""
        # The same for each worker route (claim_routes): the last gate visited among the route's.
        self._route_cursors: dict[str, str] = {}

    async def _visit(self, count: int) -> list[Gate]:
        rows = list(await self._pool.fetch(GATES_WAITING, self._cursor, count))
        if len(rows) < count and self._cursor:
            # Wrapped around: on from the first gate, up to where this round started.
            rows += [r for r in await self._pool.fetch(GATES_WAITING, "", count - len(rows))
                     if r["gate"] <= self._cursor]
        self._cursor = rows[-1]["gate"] if len(rows) == count else ""
        # Runs of disabled (or deleted) jobs wait in the queue until the job is enabled again.
        return [_gate(r) for r in rows if r["usable"]]

    async def _visit_routes(self, routes: dict[str, int]) -> list[Gate]:
        counts = {route: max(free, 16) for route, free in routes.items()}
        names = list(counts)
        rows = list(await self._pool.fetch(ROUTE_GATES_WAITING, names,
                                           [self._route_cursors.get(r, "") for r in names],
                                           [counts[r] for r in names]))
        found: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            found[r["route"]].append(r)
        wrap = [r for r in names if len(found[r]) < counts[r] and self._route_cursors.get(r)]
        if wrap:  # wrapped around: on from the route's first gate, up to where this round started
            for r in await self._pool.fetch(ROUTE_GATES_WAITING, wrap, [""] * len(wrap),
                                            [counts[w] - len(found[w]) for w in wrap]):
                if r["gate"] <= self._route_cursors[r["route"]]:
                    found[r["route"]].append(r)
        for route in names:
            seen = found[route]
            self._route_cursors[route] = seen[-1]["gate"] if len(seen) == counts[route] else ""
        return [_gate(r) for seen in found.values() for r in seen if r["usable"]]

    async def claim(self, owner: str, limit: int) -> GatedClaim:
        """Flow-controlled runs of HTTP jobs, at most `limit`, for the dispatcher `owner`."""
        if limit <= 0:
            return _nothing()
        return await self._claim(owner, limit, await self._visit(max(limit, 16)), {})

    async def claim_routes(self, owner: str, routes: dict[str, int], limit: int) -> GatedClaim:
        """Flow-controlled runs of worker jobs, at most `limit`, for the worker plane `owner`: `routes` are the
        routes ('w/<queue>/<job id>') its workers handle, with how many runs they can take."""
        if limit <= 0 or not routes:
            return _nothing()
        slots: dict[str, float] = defaultdict(float)
        for route, free in routes.items():
            slots[route.split("/", 2)[2]] += free
        return await self._claim(owner, limit, await self._visit_routes(routes), slots)

    async def _claim(self, owner: str, limit: int, visited: list[Gate], slots: dict[str, float]) -> GatedClaim:
        """Claims among the `visited` gates within their limits, each job also within its `slots` if given."""
        if not visited:
            return _nothing()
        gates = {g.gate: g for g in visited}
        jobs = {g.job_id: g for g in gates.values()}
        keyed = [g for g in gates.values() if g.key and g.max_per_key]
        async with self._pool.acquire() as conn, conn.transaction():
            state = _Round(now=await conn.fetchval(LOCK_JOBS, sorted(jobs), column=1))
            state.read(await conn.fetch(GATE_STATE, list(jobs), [g.job_id for g in keyed], [g.key for g in keyed]))
            touched: list[str] = []
            deferred = 0
            for job_id, g in jobs.items():
                if g.window_cron and not schedule.window_open(g.window_cron, g.timezone, state.now):
                    moved = await self._defer(conn, g, [x.gate for x in gates.values() if x.job_id == job_id],
                                              state.now)
                    touched += moved
                    deferred += len(moved)
                else:
                    state.open_job(g, slots.get(job_id, math.inf))
            quota = {name: state.quota(g, limit) for name, g in gates.items() if g.job_id in state.job_free}
            reasons = {name: state.why_held(gates[name]) for name, n in quota.items()
                       if n == 0 and state.held_by_limits(gates[name])}
            # Each gate offers its best few runs (enough to fill the batch if the gates are few), not up to
            # `limit` each: a hundred gates would otherwise lock ten thousand rows per claim.
            per_gate = max(2, math.ceil(2 * limit / max(1, len(quota))))
            wanted = {name: min(n, per_gate) for name, n in quota.items() if n > 0}
            heads = await conn.fetch(GATE_HEADS, list(wanted), list(wanted.values())) if wanted else []
            chosen, full = _choose(heads, gates, state, limit, reasons, wanted, quota)
            claimed = [claimed_from_row(r) for r in
                       await conn.fetch(CLAIM_IDS, len(chosen), owner, chosen)] if chosen else []
            if state.windows:
                ids = list(state.windows)
                await conn.execute(SAVE_RATE_WINDOWS, ids, [state.windows[j][0] for j in ids],
                                   [state.windows[j][1] for j in ids])
            if reasons:
                touched += [r["run_id"] for r in await conn.fetch(MARK_WAITING, list(reasons),
                                                                   list(reasons.values()))]
        retry_in = None if state.retry_at is None else max(0.0, (state.retry_at - state.now).total_seconds())
        return GatedClaim(runs=claimed, touched=touched, deferred=deferred, held=bool(reasons) or full,
                          retry_in=retry_in)

    @staticmethod
    async def _defer(conn: Any, g: Gate, own_gates: list[str], now: datetime) -> list[str]:
        """The job's execution window is closed: its due runs wait, delayed, until it opens."""
        opens = schedule.window_opens(g.window_cron, g.timezone, now)
        reason = (f"{WINDOW_WAIT_PREFIX} {g.window_cron!r} ({g.timezone or 'UTC'}); "
                  f"opens at {opens.isoformat()}")
        return [r["run_id"] for r in await conn.fetch(DEFER_TO_WINDOW, own_gates, opens, reason)]


class GatedFirst:
    """A claimer's claims (an HTTP dispatcher's, a worker hub's): flow-controlled runs first, since the plain
    claim could otherwise fill every batch and starve them, then plain ones for the rest. Does what a gated
    claim leaves to do: publish the events of the runs it touched, count its deferrals, wake the claimer when
    a held rate window ends, and remember whether gates were held (`held`: a run ending should then bring the
    claimer back, its outcome written at once)."""

    def __init__(self, pool: asyncpg.Pool, *, on_events: Callable[[Iterable[str]], None], metrics: Metrics,
                 wake: asyncio.Event) -> None:
        self.claimer = GatedClaimer(pool)
        self.held = False
        self._on_events = on_events
        self._metrics = metrics
        self._wake = wake

    async def claim(self, gated_claim: Awaitable[GatedClaim],
                    claim_rest: Callable[[list[ClaimedRun], int], Awaitable[list[ClaimedRun]]],
                    want: int) -> list[ClaimedRun]:
        """The runs of `gated_claim` (a claim of this claimer's), then what `claim_rest(gated runs, count)`
        claims to make up `want`."""
        gated = await gated_claim
        self._on_events(gated.touched)
        if gated.deferred:
            self._metrics.transition("queued", "delayed", gated.deferred)
        self.held = gated.held
        if gated.retry_in is not None:
            asyncio.get_running_loop().call_later(gated.retry_in + 0.005, self._wake.set)
        rest = want - len(gated.runs)
        if rest <= 0:
            return gated.runs
        try:
            return gated.runs + await claim_rest(gated.runs, rest)
        except DATABASE_ERRORS as exc:
            if not gated.runs:
                raise
            # The gated runs are the claimer's already: it must start them, or they would sit executing until
            # their deadline passed and the recovery sweep took them back, an attempt spent.
            log.warning("claim failed after a gated claim: %r", exc, extra={"action": "claim_error"})
            return gated.runs
