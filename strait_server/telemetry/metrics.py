"""Prometheus metrics of one server process, in a registry of their own (not the process-wide default), so
that several App instances in one process (tests) keep separate counts. See docs/metrics-and-tracing.md."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from strait_server.model import RunStatus

# Statement latencies: sub-millisecond on an idle database, tens of milliseconds under load.
_STATEMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)

# Dispatch outcome label by the status the outcome asks for.
OUTCOME_LABELS = {
    RunStatus.COMPLETED: "completed",
    RunStatus.QUEUED: "retry",
    RunStatus.DEAD_LETTER: "dead_letter",
    RunStatus.TIMED_OUT: "timed_out",
    RunStatus.EXECUTING: "accepted",  # 202: the run's code completes it later
}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._runs_seen: set[tuple[str, str]] = set()
        self.run_transitions = Counter(
            "strait_run_transitions", "Run status changes committed by this process, by from and to status "
            "(from is empty for a new run).", ["from", "to"], registry=r)
        self.runs = Gauge(
            "strait_runs", "Runs not yet finished, by job queue and status (queued, delayed, executing); "
            "read from the database at scrape time, by processes with the scheduler role.",
            ["queue", "status"], registry=r)
        self.claim_duration = Histogram(
            "strait_claim_duration_seconds", "Duration of one claim pass (gated and plain claims, possibly no run).",
            registry=r, buckets=_STATEMENT_BUCKETS)
        self.settle_duration = Histogram(
            "strait_settle_duration_seconds", "Duration of one settle statement (a batch of outcomes).",
            registry=r, buckets=_STATEMENT_BUCKETS)
        self.dispatch_duration = Histogram(
            "strait_dispatch_duration_seconds", "Duration of one dispatch attempt (HTTP POST, with its fallback), "
            "by job id and outcome.", ["job", "outcome"], registry=r, buckets=_DISPATCH_BUCKETS)
        self.schedule_lag = Histogram(
            "strait_schedule_lag_seconds", "How long after its tick time a cron tick fired.",
            registry=r, buckets=_LAG_BUCKETS)
        self.workflow_runs_started = Counter(
            "strait_workflow_runs_started", "Workflow runs started by this process (a queued run when it leaves the "
            "queue).", registry=r)
        self.workflow_runs_ended = Counter(
            "strait_workflow_runs_ended", "Workflow runs that ended in a move of this process, by final status.",
            ["status"], registry=r)
        self.workflow_step_duration = Histogram(
            "strait_workflow_step_duration_seconds", "Workflow steps from their start to their end (seen by this "
            "process's moves), by kind and final status.", ["kind", "status"], registry=r, buckets=_DISPATCH_BUCKETS)
        self.budget_exhausted = Counter(
            "strait_budget_exhausted", "Projects whose reported costs reached their monthly budget (once per "
            "crossing), by the project's budget action.", ["action"], registry=r)
        self.workers_connected = Gauge(
            "strait_workers_connected", "Worker sessions connected to this process, by queue they handle (a "
            "worker with handlers in two queues counts in both); refreshed with its heartbeat.", ["queue"],
            registry=r)
        self.worker_runs_in_flight = Gauge(
            "strait_worker_runs_in_flight", "Runs assigned to the workers connected to this process and not yet "
            "reported, by job queue; refreshed with its heartbeat.", ["queue"], registry=r)
        self._worker_queues_seen: set[str] = set()
        self.watch_streams = Gauge(
            "strait_watch_streams",
            "Open watch streams (WatchRun, WatchRuns, WatchWorkflowRun, WatchWorkflowRuns) on this process.",
            registry=r)
        self.large_requests_waiting = Gauge(
            "strait_large_requests_waiting", "BatchTriggerJob calls waiting, unread, for their turn to be read "
            "(STRAIT_LARGE_REQUEST_WAIT).", registry=r)
        self.loop_errors = Counter(
            "strait_loop_errors", "Failed passes of background loops that outlive errors (the database or Redis "
            "away, a statement refused), by loop; each is logged and the pass is tried again.", ["loop"],
            registry=r)
        self.grpc_requests = Counter(
            "strait_grpc_requests", "Finished gRPC calls by method and status code (streams count when they end).",
            ["method", "code"], registry=r)
        self.grpc_duration = Histogram(
            "strait_grpc_request_duration_seconds", "Duration of gRPC calls by method (streams: until they end).",
            ["method"], registry=r, buckets=_RPC_BUCKETS)

    def transition(self, from_status: str, to_status: str, count: int = 1) -> None:
        if count:
            self.run_transitions.labels(from_status, to_status).inc(count)

    def transitions(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Counts (from, to) pairs, one label lookup per distinct pair."""
        for (src, dst), n in Tally(pairs).items():
            self.run_transitions.labels(src, dst).inc(n)

    def set_workers(self, connected: Mapping[str, int], in_flight: Mapping[str, int]) -> None:
        """Sets the worker gauges by queue; a queue seen before and absent now reads 0."""
        queues = connected.keys() | in_flight.keys()
        for queue in self._worker_queues_seen | queues:
            self.workers_connected.labels(queue).set(connected.get(queue, 0))
            self.worker_runs_in_flight.labels(queue).set(in_flight.get(queue, 0))
        self._worker_queues_seen |= queues

    def set_runs(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Sets the strait_runs gauge to fresh counts; a (queue, status) seen before and absent now reads 0,
        so that graphs drop to zero instead of ending."""
        for key in self._runs_seen - counts.keys():
            self.runs.labels(*key).set(0)
        for (queue, status), n in counts.items():
            self.runs.labels(queue, status).set(n)
        self._runs_seen |= counts.keys()
