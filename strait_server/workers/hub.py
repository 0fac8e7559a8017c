"""The worker plane of one server process: the sessions of the workers connected here, the claim of the runs
their handlers take, and the settle of their results.

The hub is a dispatcher like the HTTP one (a row in `dispatchers`, heartbeats, leases in its name), so the
recovery sweep of another process takes its runs back if this process dies. Runs of worker jobs wait in the
ready queue under route gates ('w/<queue>/<job id>', see strait_gate): one statement claims, for every route
with a connected worker that has free slots, as many runs as those workers can take, and the hub spreads them
over the sessions (most free slots first). Runs of worker jobs with flow control wait under the routes'
limited gates ('w/<queue>/<job id>/<key>'), claimed first by the gated claim (see dispatch/gates.py) within
their limits and their workers' slots. Results go through the same settle buffer and statement as HTTP
outcomes; a session whose stream ends gives its unreported runs back at once (Queue.lose).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from strait_server import ids
from strait_server.auth import RunTokenSigner
from strait_server.config import Settings
from strait_server.dispatch.gates import GatedFirst
from strait_server.dispatch.http import Attempt, outcome_of
from strait_server.dispatch.settle import SettleBuffer
from strait_server.errors import ResourceExhausted
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import ErrorClass
from strait_server.queue import ClaimedRun, Outcome, Queue
from strait_server.store.worker_sessions import WorkerSessionStore
from strait_server.tasks import Supervisor, cancel_and_wait
from strait_server.telemetry import Telemetry
from strait_server.workers.session import Assigned, Session

log = logging.getLogger(__name__)

# Runs claimed per statement at most.
CLAIM_BATCH = 1000
# How often held runs are checked against their deadlines.
WATCH_INTERVAL_S = 0.25


class WorkerHub:
    def __init__(self, queue: Queue, listing: WorkerSessionStore, settings: Settings, tokens: RunTokenSigner, *,
                 on_events: Callable[[Iterable[str]], None], telemetry: Telemetry, supervisor: Supervisor,
                 events_live: Callable[[], bool] = lambda: True) -> None:
        self.owner = ids.new_id("disp")
        self._queue = queue
        self._listing = listing
        self._settings = settings
        self._tokens = tokens
        self._on_events = on_events
        # Whether other processes' events reach runs_changed (the event bus is up); if not, held runs are polled.
        self._events_live = events_live
        self._telemetry = telemetry
        self._supervisor = supervisor
        self._sessions: dict[str, Session] = {}
        # For a trigger's direct handoff: the sessions handling each (project, job id), and the job id of each
        # (project, slug) they handle.
        self._by_job: dict[tuple[str, str], list[Session]] = {}
        self._job_of_slug: dict[tuple[str, str], str] = {}
        # Results handed to the settle buffer and not yet committed: run id -> (session, assignment id).
        self._settling: dict[str, tuple[Session, str]] = {}
        # Runs held by sessions here, and those whose events say they may have moved on (to check).
        self._held: dict[str, Session] = {}
        self._suspects: set[str] = set()
        self._suspect = asyncio.Event()
        self._draining = False
        # Assignment ids: this hub's id and a counter (unique, and cheaper than a UUID per dispatch).
        self._assignments = itertools.count(1)
        self._released = asyncio.Event()  # set whenever a held run was reported, canceled or given back
        self._wake = asyncio.Event()
        # A gated claim that held runs back (`held`): a run of theirs settling may free their turn.
        self._gated = GatedFirst(queue.pool, on_events=on_events, metrics=telemetry.metrics, wake=self._wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._settler = SettleBuffer(queue, self.owner,
                                     flush_interval_s=settings.settle_flush_interval.total_seconds(),
                                     batch_size=settings.settle_batch_size, on_settled=self._on_settled,
                                     supervisor=supervisor)

    async def start(self) -> None:
        # The heartbeat row must exist before the first claim, or a sweep would take the runs back.
        await self._heartbeat()
        self._settler.start()
        self._tasks = [self._supervisor.spawn(self._claim_loop(), name="worker-claim-loop"),
                       self._supervisor.spawn(self._heartbeat_loop(), name="worker-hub-heartbeat"),
                       self._supervisor.spawn(self._watch_loop(), name="worker-watch-loop")]

    def runs_changed(self, run_ids: list[str] | None) -> None:
        """From the event bus: these runs (None: any) have new events. Held ones may have been canceled."""
        held = self._held
        if not held:
            return
        found = list(held) if run_ids is None else [r for r in run_ids if r in held]
        if found:
            self._suspects.update(found)
            self._suspect.set()

    async def stop(self) -> None:
        """Ends the sessions' assignments: what was reported is settled, the rest goes back to the queue."""
        await cancel_and_wait(self._tasks)
        await self._settler.stop()
        with contextlib.suppress(*DATABASE_ERRORS):
            self._on_events(await self._queue.hand_back(self.owner))
            await self._queue.remove_dispatcher(self.owner)

    @property
    def draining(self) -> bool:
        """Shutting down: assigning nothing more (see drain)."""
        return self._draining

    def notify(self) -> None:
        """Runs may have been enqueued: claim for the connected workers now."""
        self._wake.set()

    # Sessions

    async def open(self, session: Session) -> None:
        """Admits a new session (RESOURCE_EXHAUSTED past the per-project and per-key caps), listed for
        ListWorkers."""
        s = self._settings
        for attribute, cap, what in (("project_id", s.worker_max_streams_per_project, "project"),
                                     ("key_id", s.worker_max_streams_per_key, "API key")):
            value = getattr(session, attribute)
            if sum(1 for other in self._sessions.values() if getattr(other, attribute) == value) >= cap:
                raise ResourceExhausted(f"this {what} already has {cap} worker sessions on this server",
                                        reason="WORKER_STREAMS_EXHAUSTED", retry_after_seconds=5.0)
        await self._listing.insert(session.id, session.project_id, session.worker_id, session.name,
                                   session.hostname, self.owner, session.handlers(), session.slots)
        self._sessions[session.id] = session
        for route in session.routes:
            self._by_job.setdefault((session.project_id, route.job_id), []).append(session)
            self._job_of_slug[(session.project_id, route.job_slug)] = route.job_id
        self._wake.set()

    async def readopt(self, session: Session, held: list[tuple[str, str, int]]) -> list[str]:
        """A reconnecting worker's assignments (assignment id, run, attempt): those whose runs are still at
        that attempt and executing are held by `session` again; returns their assignment ids."""
        by_run: dict[str, tuple[str, int]] = {}
        dispatches = []
        for aid, run_id, attempt in held:
            made = dispatch_of(aid)
            if made is not None:  # else not an assignment id of ours: nothing to readopt
                by_run[run_id] = (aid, attempt)
                dispatches.append((run_id, attempt, *made))
        adopted = await self._queue.adopt(self.owner, dispatches) if dispatches else []
        now = time.monotonic()
        readopted = []
        for run, elapsed in adopted:
            assignment_id, _ = by_run[run.id]
            earlier = self._held.get(run.id)
            if earlier is not None and earlier is not session:  # an older session here, not yet closed
                earlier.take_run(run.id)
            session.hold(Assigned(assignment_id, run, session.gate_of_job.get(run.job_id, ""), now - elapsed))
            self._held[run.id] = session
            readopted.append(assignment_id)
        if readopted:
            self._on_events(run.id for run, _ in adopted)
        return readopted

    async def close(self, session: Session) -> None:
        """The session's stream ended: its unreported runs go back to the queue at once. Runs to its end even
        when the caller is cancelled (a cancelled RPC's handler may be cancelled again while it cleans up):
        runs left held by a gone session would wait for the recovery sweep."""
        await asyncio.shield(self._close(session))

    async def _close(self, session: Session) -> None:
        listed = self._sessions.pop(session.id, None) is not None
        for route in session.routes if listed else ():
            key = (session.project_id, route.job_id)
            others = [s for s in self._by_job.get(key, ()) if s is not session]
            if others:
                self._by_job[key] = others
            else:
                self._by_job.pop(key, None)
                self._job_of_slug.pop((session.project_id, route.job_slug), None)
        held = session.release_all()
        for run_id in held:
            self._held.pop(run_id, None)
        self._released.set()
        if listed:
            with contextlib.suppress(*DATABASE_ERRORS):  # else forgotten with this process's dispatcher row
                await self._listing.delete(session.id)
        if held:
            try:
                self._on_events(await self._queue.lose(self.owner, held, self._settings.max_lost_requeues))
            except DATABASE_ERRORS as exc:
                # Left to the recovery sweep: their leases expire with their deadlines.
                log.warning("could not give back the runs of a closed worker session: %r", exc,
                            extra={"action": "worker_release_error", "session": session.id})
            self._wake.set()

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: assign nothing more, tell the workers, and wait (at most `timeout_s`) until their runs
        are reported and settled, so that only what is still running then goes back to the queue."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for session in self._sessions.values():
            session.drain(datetime.now(UTC) + timedelta(seconds=timeout_s), "the server is shutting down")
        while (self._held or self._settling) and loop.time() < deadline:
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), deadline - loop.time())

    def submit(self, session: Session, outcome: Outcome, assignment_id: str) -> None:
        """A result of the session's: settled with the next flush, then acknowledged on its stream."""
        self._held.pop(outcome.run_id, None)
        self._settling[outcome.run_id] = (session, assignment_id)
        # While limits hold runs back, the slot this run frees counts only once its outcome is written.
        self._settler.add(outcome, at_once=self._gated.held)
        self._wake.set()  # a slot is free

    def _on_settled(self, outcomes: list[Outcome], settled: set[str]) -> None:
        self._on_events(settled)
        by_session: dict[str, tuple[Session, list[str], list[str]]] = {}
        for o in outcomes:
            entry = self._settling.pop(o.run_id, None)
            if entry is None:
                continue
            session, assignment_id = entry
            _, accepted, moved_on = by_session.setdefault(session.id, (session, [], []))
            (accepted if o.run_id in settled else moved_on).append(assignment_id)
        for session, accepted, moved_on in by_session.values():
            session.acknowledge(accepted, moved_on)
        self._released.set()
        if self._gated.held and settled:
            self._wake.set()  # their leases are gone now: the limits count them no more

    # A trigger's direct handoff

    def direct_route(self, project_id: str, job_id: str, slug: str) -> str | None:
        """The route of the job (named by id or slug) when a session here handles it and has a free slot: a
        trigger may then write its run already claimed by this hub (see assign_claimed)."""
        if self._draining:
            return None
        job = job_id or self._job_of_slug.get((project_id, slug), "")
        for session in self._by_job.get((project_id, job), ()):
            if session.free > 0:
                return session.gate_of_job[job]
        return None

    async def assign_claimed(self, run: ClaimedRun) -> None:
        """A run a trigger wrote already claimed by this hub: assigned now, or given back to the queue when its
        sessions left or filled up meanwhile."""
        if self._place([run]):
            self._on_events(await self._queue.lose(self.owner, [run.id], self._settings.max_lost_requeues))
            self._wake.set()

    # Claiming

    async def _claim_loop(self) -> None:
        poll = self._settings.poll_interval.total_seconds()
        while True:
            self._wake.clear()
            try:
                claimed = await self._claim_once()
            except DATABASE_ERRORS as exc:
                self._telemetry.metrics.loop_errors.labels("worker_claim").inc()
                log.warning("worker claim failed: %r", exc, extra={"action": "worker_claim_error"})
                claimed = 0
                await asyncio.sleep(min(poll, 1.0))
            if claimed:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)

    async def _claim_once(self) -> int:
        """One claim for every route with free slots; returns how many runs were assigned."""
        if self._draining:
            return 0
        free: dict[str, int] = {}
        for session in self._sessions.values():
            for gate in session.gates:
                free[gate] = free.get(gate, 0) + session.free
        routes = {g: n for g, n in free.items() if n > 0}
        if not routes:
            return 0
        want = min(CLAIM_BATCH, sum(s.free for s in self._sessions.values()))
        started = time.time_ns()
        runs = await self._claim(routes, want)
        if not runs:
            return 0
        self._telemetry.claimed(runs, started)
        self._on_events(r.id for r in runs)
        unplaced = self._place(runs)
        if unplaced:  # their sessions left meanwhile
            self._on_events(await self._queue.lose(self.owner, unplaced, self._settings.max_lost_requeues))
        return len(runs) - len(unplaced)

    async def _claim(self, routes: dict[str, int], want: int) -> list[ClaimedRun]:
        """Runs for these routes (each with its workers' free slots), flow-controlled ones first."""
        async def plain(gated: list[ClaimedRun], rest: int) -> list[ClaimedRun]:
            # What each route's workers can still take once the gated runs are theirs.
            taken = Counter(run.job_id for run in gated)
            left = {g: n for g, free in routes.items() if (n := free - taken[g.split("/", 2)[2]]) > 0}
            return await self._queue.claim_routes(self.owner, left, rest) if left else []
        return await self._gated.claim(self._gated.claimer.claim_routes(self.owner, routes, want), plain, want)

    def _place(self, runs: list[ClaimedRun]) -> list[str]:
        """Assigns each run to a session that handles its route, most free slots first; returns the runs no
        session could take."""
        unplaced: list[str] = []
        batches: dict[str, list[Assigned]] = {}
        now = time.monotonic()
        # A run's route: the gate a session names for its job (one lookup per run, however many sessions).
        gate_of_job = {job: gate for s in self._sessions.values() for job, gate in s.gate_of_job.items()}

        def gate_of(run: ClaimedRun) -> str:
            return gate_of_job.get(run.job_id, "")
        for gate, group in itertools.groupby(sorted(runs, key=gate_of), key=gate_of):
            takers = sorted((s for s in self._sessions.values() if gate in s.gates and s.free > 0),
                            key=lambda s: -s.free)
            for run in group:
                session = next((s for s in takers if s.free > 0), None)
                if session is None:
                    unplaced.append(run.id)
                    continue
                assigned = Assigned(assignment_id(self.owner, run.lost_count, next(self._assignments)), run,
                                    gate, now)
                session.hold(assigned)
                self._held[run.id] = session
                batches.setdefault(session.id, []).append(assigned)
        for session_id, assigned_runs in batches.items():
            self._sessions[session_id].send_assignments(assigned_runs, self._tokens)
        return unplaced

    # Runs taken away: canceled elsewhere, or past their deadline here

    async def _watch_loop(self) -> None:
        """Sends a cancel for held runs that moved on (their events said they may have), and times out the
        ones past their attempt's deadline."""
        poll_interval = self._settings.watch_poll_interval.total_seconds()
        next_poll = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._suspect.wait(), WATCH_INTERVAL_S)
            self._suspect.clear()
            suspects, self._suspects = self._suspects, set()
            if self._held and not self._events_live() and time.monotonic() >= next_poll:
                # A cancel in another process would not be heard of: every held run is looked at instead.
                suspects.update(self._held)
                next_poll = time.monotonic() + poll_interval
            try:
                if suspects:
                    await self._cancel_moved_on([r for r in suspects if r in self._held])
            except DATABASE_ERRORS as exc:
                self._telemetry.metrics.loop_errors.labels("worker_watch").inc()
                log.warning("worker run check failed: %r", exc, extra={"action": "worker_watch_error"})
                self._suspects |= suspects  # looked at again next time
            self._time_out(time.monotonic())

    async def _cancel_moved_on(self, run_ids: list[str]) -> None:
        """Held runs whose events came: those no longer this hub's are cancelled on their streams; the others
        take their deadline from the database (a heartbeat through RunContextService extends it)."""
        moved_on = []
        now = time.monotonic()
        for run_id, mine, left_s in await self._queue.held_state(self.owner, run_ids):
            session = self._held.get(run_id)
            if not mine:
                moved_on.append(run_id)
            elif session is not None and left_s is not None and (assigned := session.assigned(run_id)):
                assigned.deadline = now + left_s
        for run_id in moved_on:
            session = self._held.pop(run_id, None)
            if session is not None and (assigned := session.take_run(run_id)) is not None:
                session.cancel([assigned], "the run was canceled or taken back")
        if moved_on:
            self._released.set()
            self._wake.set()  # slots are free

    def _time_out(self, now: float) -> None:
        """Held runs past their attempt's deadline end timed out (retried by their job's policy), as an HTTP
        attempt does; their workers are told to stop."""
        for session in list(self._sessions.values()):
            late = [a for a in session.held.values() if now > a.deadline]
            for assigned in late:
                session.take(assigned.assignment_id)
                attempt = Attempt(0, "no result within the attempt's timeout", ErrorClass.TIMEOUT, None,
                                  f"worker:{session.worker_id}")
                self.submit(session, outcome_of(assigned.run, attempt, assigned.start_time(),
                                                (now - assigned.since) * 1000), assigned.assignment_id)
            if late:
                session.cancel(late, "the attempt timed out")

    def _count(self, sessions: list[Session]) -> None:
        connected: Counter[str] = Counter()
        in_flight: Counter[str] = Counter()
        for session in sessions:
            connected.update(_queues(session))
            queue_of = {r.job_id: r.queue for r in session.routes}
            in_flight.update(queue_of.get(a.run.job_id, "") for a in session.held.values())
        self._telemetry.metrics.set_workers(connected, in_flight)

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.heartbeat_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat()
                sessions = list(self._sessions.values())
                self._count(sessions)
                drain = set(await self._listing.refresh([(s.id, s.slots, len(s.held)) for s in sessions]))
                for session in sessions:
                    if session.id in drain and not session.draining:
                        session.drain(None, "asked to drain (DrainWorker)")
            except DATABASE_ERRORS as exc:
                self._telemetry.metrics.loop_errors.labels("worker_heartbeat").inc()
                log.warning("worker hub heartbeat failed: %r", exc, extra={"action": "heartbeat_error"})


    async def _heartbeat(self) -> None:
        """Renews the hub's liveness durably, which also confirms the results settled before it, or writes them
        again if the database server restarted meanwhile (results are acknowledged to workers at commit, which
        a crash may undo: see SettleBuffer)."""
        host, pid = socket.gethostname(), os.getpid()
        await self._settler.heartbeat(lambda: self._queue.heartbeat(self.owner, host, pid))


def assignment_id(owner: str, lost_count: int, n: int) -> str:
    """A dispatch's assignment id: who made it, the run's loss count then, and a counter. Opaque to workers; a
    reconnecting worker's held assignments are readopted only while the run is still in that dispatch."""
    return f"{owner}.{lost_count}.{n}"


def dispatch_of(value: str) -> tuple[str, int] | None:
    """(owner, lost count) of an assignment id made by assignment_id; None for anything else."""
    parts = value.rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit() or len(parts[1]) > 9:
        return None
    return parts[0], int(parts[1])


def _queues(session: Session) -> set[str]:
    return {r.queue for r in session.routes}
