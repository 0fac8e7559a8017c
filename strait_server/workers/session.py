"""One worker's session: what it handles, its slots, the assignments it holds, and its stream's outbox."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import worker_pb2
from strait_server.auth import RunTokenSigner
from strait_server.queue import ClaimedRun

W = worker_pb2
# Margin of a run token beyond the attempt's timeout (a handler may report just after it).
TOKEN_MARGIN_S = 60.0


@dataclass
class Assigned:
    """A run given to a session: `assignment_id` names this dispatch of it."""

    assignment_id: str
    run: ClaimedRun
    gate: str
    since: float  # time.monotonic()
    # When its attempt times out (time.monotonic()): its timeout after `since`, later when the run heartbeats.
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = self.deadline or self.since + self.run.timeout_ms / 1000

    def start_time(self) -> datetime:
        """When it was dispatched, on the wall clock (for the attempt's record)."""
        return datetime.now(UTC) - timedelta(seconds=time.monotonic() - self.since)


def route_gate(queue: str, job_id: str) -> str:
    """The ready-queue gate of a worker job's runs: the same text strait_gate (see migrations) gives them."""
    return f"w/{queue}/{job_id}"


@dataclass
class Route:
    queue: str
    job_slug: str
    job_id: str


@dataclass
class Session:
    id: str
    project_id: str
    key_id: str
    worker_id: str
    name: str
    hostname: str
    slots: int
    max_batch: int
    routes: list[Route]
    held: dict[str, Assigned] = field(default_factory=dict)
    draining: bool = False  # assigned nothing more (a drain of the server, or DrainWorker)
    # Messages for the stream, in order; None ends it.
    outbox: asyncio.Queue[W.ConnectResponse | None] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self._by_run: dict[str, str] = {}  # run id -> assignment id, of the held ones
        self.gate_of_job = {r.job_id: route_gate(r.queue, r.job_id) for r in self.routes}
        self.gates = frozenset(self.gate_of_job.values())
        self._slugs = {r.job_id: (r.queue, r.job_slug) for r in self.routes}

    @property
    def free(self) -> int:
        return 0 if self.draining else max(0, self.slots - len(self.held))

    def handlers(self) -> list[dict[str, str]]:
        return [{"queue": r.queue, "job_slug": r.job_slug} for r in self.routes]

    def hold(self, assigned: Assigned) -> None:
        self.held[assigned.assignment_id] = assigned
        self._by_run[assigned.run.id] = assigned.assignment_id

    def take(self, assignment_id: str) -> Assigned | None:
        """The assignment a result names, no longer held (its slot is free); None when it is not held."""
        assigned = self.held.pop(assignment_id, None)
        if assigned is not None:
            self._by_run.pop(assigned.run.id, None)
        return assigned

    def assigned(self, run_id: str) -> Assigned | None:
        """The held assignment of this run, if any."""
        assignment_id = self._by_run.get(run_id)
        return None if assignment_id is None else self.held.get(assignment_id)

    def take_run(self, run_id: str) -> Assigned | None:
        """The assignment of this run, no longer held; None when it is not held."""
        assignment_id = self._by_run.get(run_id)
        return None if assignment_id is None else self.take(assignment_id)

    def cancel(self, assigned: list[Assigned], reason: str) -> None:
        self.outbox.put_nowait(W.ConnectResponse(cancel=W.CancelAssignments(assignments=[
            W.CanceledAssignment(assignment_id=a.assignment_id, run_id=a.run.id, reason=reason) for a in assigned])))

    def drain(self, deadline: datetime | None, reason: str) -> None:
        self.draining = True
        message = W.Drain(reason=reason)
        if deadline is not None:
            message.deadline_time.FromDatetime(deadline)
        self.outbox.put_nowait(W.ConnectResponse(drain=message))

    def release_all(self) -> list[str]:
        """The runs still held (the stream ended): no longer held."""
        runs = [a.run.id for a in self.held.values()]
        self.held.clear()
        self._by_run.clear()
        return runs

    def send_assignments(self, assigned: list[Assigned], tokens: RunTokenSigner) -> None:
        now = time.time()
        for start in range(0, len(assigned), self.max_batch):
            batch = [self._assignment(a, tokens, now) for a in assigned[start:start + self.max_batch]]
            self.outbox.put_nowait(W.ConnectResponse(assignments=W.AssignmentBatch(assignments=batch)))

    def _assignment(self, a: Assigned, tokens: RunTokenSigner, now: float) -> W.Assignment:
        run = a.run
        queue, slug = self._slugs.get(run.job_id, ("", ""))
        timeout_s = run.timeout_ms / 1000
        deadline = now + timeout_s
        return W.Assignment(
            assignment_id=a.assignment_id, run_id=run.id, job_id=run.job_id, job_slug=slug, queue=queue,
            attempt=run.attempt, max_attempts=run.max_attempts, payload_json=run.payload,
            run_token=tokens.issue(run.id, run.attempt, timeout_s + TOKEN_MARGIN_S),
            last_checkpoint_json=run.checkpoint or "",
            deadline_time=Timestamp(seconds=int(deadline), nanos=int(deadline % 1 * 1e9)))

    def acknowledge(self, accepted: list[str], moved_on: list[str]) -> None:
        """After the settle of its results committed: which were taken, which the run had moved on from."""
        self.outbox.put_nowait(W.ConnectResponse(results_accepted=W.ResultsAccepted(
            assignment_ids=accepted,
            rejected=[W.RejectedResult(assignment_id=a, reason=W.REJECT_REASON_RUN_MOVED_ON,
                                       message="the run moved on (canceled, or timed out and taken back)")
                      for a in moved_on])))

    def reject(self, rejected: list[W.RejectedResult]) -> None:
        if rejected:
            self.outbox.put_nowait(W.ConnectResponse(results_accepted=W.ResultsAccepted(rejected=rejected)))

    def end(self) -> None:
        self.outbox.put_nowait(None)
