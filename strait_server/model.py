"""Domain types: run states and their allowed transitions, jobs, runs, events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple


class ErrorClass(enum.StrEnum):
    """Why an attempt failed (runs.error_class, Run.error_class): the retry, fallback and circuit rules read it."""

    NONE = ""
    RATE_LIMITED = "rate_limited"  # 429
    REQUEST_TIMEOUT = "request_timeout"  # 408
    AUTH = "auth"  # 401, 403
    CLIENT = "client"  # other 4xx
    SERVER = "server"  # 5xx
    UNKNOWN = "unknown"  # any other status, or a failure of the dispatch itself
    TIMEOUT = "timeout"  # no answer within the attempt's timeout, or no Complete/Fail after a 202
    CONNECTION = "connection"
    INVALID_REQUEST = "invalid_request"  # the request could not be sent (a malformed URL or header)
    CIRCUIT_OPEN = "circuit_open"  # not attempted: the endpoint's circuit is open (the attempt is given back)
    CRASHED = "crashed"  # the dispatching process was lost
    JOB = "job"  # the run's own code reported the failure (RunContextService.Fail, a worker's non-retryable error)
    HANDLER = "handler"  # a worker's handler failed (raised), or returned what cannot be stored


class EventType(enum.StrEnum):
    """run_events.type: what happened to a run (docs/events.md)."""

    STATUS_CHANGE = "status_change"
    WAITING = "waiting"  # why a due run does not start yet
    ACCEPTED = "accepted"  # the endpoint answered 202
    HEARTBEAT = "heartbeat"
    LOG = "log"
    PROGRESS = "progress"
    CHECKPOINT = "checkpoint"
    OUTPUT_CHUNK = "output_chunk"
    COST = "cost"
    CIRCUIT = "circuit"  # the endpoint's circuit opened or closed because of this run
    DEBOUNCED = "debounced"  # a later trigger replaced the payload and pushed the run back


class RunStatus(enum.StrEnum):
    DELAYED = "delayed"
    QUEUED = "queued"
    DEQUEUED = "dequeued"
    EXECUTING = "executing"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    SYSTEM_FAILED = "system_failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    DEAD_LETTER = "dead_letter"
    REPLAY_STAGED = "replay_staged"
    PAUSED = "paused"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


# How a run's wait_reason starts while it waits, delayed, for its job's execution window: the gated claim
# writes it, and UpdateJob finds those runs by it when the window changes.
WINDOW_WAIT_PREFIX = "outside the execution window"

TERMINAL: frozenset[RunStatus] = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CRASHED,
        RunStatus.SYSTEM_FAILED,
        RunStatus.CANCELED,
        RunStatus.EXPIRED,
        RunStatus.DEAD_LETTER,
    }
)

S = RunStatus
# The run state machine (reference model, fsm.go). Every UPDATE of runs.status names its allowed
# "from" states from this table; tests/unit/test_model.py checks the store against it.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.DELAYED: frozenset({S.QUEUED, S.CANCELED, S.EXPIRED}),
    # queued -> delayed: a flow-controlled run found its job's execution window closed.
    S.QUEUED: frozenset({S.DEQUEUED, S.EXECUTING, S.CANCELED, S.EXPIRED, S.DELAYED}),
    S.DEQUEUED: frozenset({S.EXECUTING, S.QUEUED, S.CANCELED, S.SYSTEM_FAILED}),
    S.EXECUTING: frozenset(
        {S.COMPLETED, S.FAILED, S.TIMED_OUT, S.CRASHED, S.CANCELED, S.WAITING, S.QUEUED,
         S.SYSTEM_FAILED, S.DEAD_LETTER, S.PAUSED}
    ),
    S.WAITING: frozenset({S.EXECUTING, S.COMPLETED, S.FAILED, S.CANCELED, S.TIMED_OUT}),
    S.DEAD_LETTER: frozenset({S.QUEUED, S.REPLAY_STAGED}),
    S.REPLAY_STAGED: frozenset({S.QUEUED, S.CANCELED}),
    S.PAUSED: frozenset({S.QUEUED, S.CANCELED}),
}


def sources_of(target: RunStatus) -> list[str]:
    """Statuses from which `target` may be reached, as the text stored in runs.status."""
    return sorted(src.value for src, dsts in TRANSITIONS.items() if target in dsts)


def can_transition(src: RunStatus, dst: RunStatus) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


# Statuses a user may cancel (every non-terminal one that the machine lets reach CANCELED).
CANCELABLE = sources_of(RunStatus.CANCELED)

# Reserved run metadata key: the W3C traceparent of the span that created the run, so that its claim and
# dispatch (in any process, any time later) continue the trigger's trace. Never shown through the API.
TRACE_CONTEXT_KEY = "_traceparent"


class ExecutionMode(enum.StrEnum):
    HTTP = "http"
    WORKER = "worker"


class OverlapPolicy(enum.StrEnum):
    ALLOW = "allow"
    SKIP = "skip"
    CANCEL_RUNNING = "cancel_running"


class RetryStrategy(enum.StrEnum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"


@dataclass(frozen=True)
class ApiRateLimit:
    """At most `requests` API calls per `window`, counted per API key."""

    requests: int
    window: timedelta


@dataclass(frozen=True, kw_only=True)
class Project:
    id: str
    slug: str
    name: str
    create_time: datetime
    # Limit of this project's keys that have none of their own; None: the server default.
    api_rate_limit: ApiRateLimit | None = None
    monthly_budget_microusd: int | None = None
    budget_action: str = "notify"
    month_spend_microusd: int = 0


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    id: str
    project_id: str
    name: str
    key_prefix: str
    create_time: datetime
    revoke_time: datetime | None
    # This key's own limit; None: the project's, else the server default.
    api_rate_limit: ApiRateLimit | None = None
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """The user-settable fields of a job, validated."""

    slug: str
    name: str
    description: str = ""
    endpoint_url: str = ""
    fallback_endpoint_url: str = ""
    execution_mode: ExecutionMode = ExecutionMode.HTTP
    queue: str = "default"
    max_attempts: int = 3
    timeout_ms: int = 300_000
    retry_strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    retry_initial_ms: int = 1_000
    retry_max_ms: int = 3_600_000
    priority: int = 0
    enabled: bool = True
    signing_secret: str = field(default="", repr=False)
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    cron: str = ""
    timezone: str = "UTC"
    cron_overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    run_ttl_ms: int = 0
    max_concurrency: int = 0
    max_concurrency_per_key: int = 0
    rate_limit_max: int = 0
    rate_limit_window_ms: int = 0
    execution_window_cron: str = ""
    poison_pill_threshold: int = 0
    dedup_window_ms: int = 0
    debounce_window_ms: int = 0
    max_run_cost_microusd: int = 0  # 0: the server default

    @property
    def flow_controlled(self) -> bool:
        """Whether its runs start through the gated claim (limits or an execution window)."""
        return bool(self.max_concurrency or self.max_concurrency_per_key or self.rate_limit_max
                    or self.execution_window_cron)


@dataclass(frozen=True, kw_only=True)
class Job(JobSpec):
    id: str
    project_id: str
    version: int
    create_time: datetime
    update_time: datetime
    next_fire_time: datetime | None = None
    schedule_paused: bool = False

    @property
    def etag(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    attempt: int
    status_code: int
    duration_ms: float
    error: str
    endpoint_url: str
    start_time: datetime | None


# Not frozen: a frozen dataclass sets each of these 22 fields through object.__setattr__, which showed up
# at ~8% of a 1,000-run BatchTriggerJob. Runs are still never mutated after construction.
@dataclass(kw_only=True, slots=True)
class Run:
    id: str
    project_id: str
    job_id: str
    status: RunStatus
    attempt: int
    max_attempts: int
    priority: int
    timeout_ms: int
    payload: str
    output: str | None
    error: str
    error_class: str
    scheduled_time: datetime
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    finish_time: datetime | None
    idempotency_key: str
    tags: dict[str, str]
    metadata: dict[str, str]
    attempts: list[AttemptRecord]
    replay_of: str
    expires_at: datetime | None = None
    concurrency_key: str = ""
    # Why a due run is not starting yet (a limit or the execution window); empty once it starts.
    wait_reason: str = ""
    cost_microusd: int = 0
    lost_count: int = 0  # requeued without spending an attempt, after its dispatcher or outcome was lost


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    run_id: str
    job_id: str
    seq: int
    type: str
    from_status: str
    to_status: str
    attempt: int
    message: str
    data: str
    create_time: datetime


# Not frozen, for the same reason as Run: a batch builds 1,000 of these per call.
@dataclass(kw_only=True, slots=True)
class NewRun:
    """A validated request for one run of a job."""

    payload: str = "{}"
    scheduled_time: datetime | None = None
    priority: int | None = None
    timeout_ms: int | None = None
    max_attempts: int | None = None
    idempotency_key: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    ttl_ms: int | None = None
    concurrency_key: str = ""
    dedup_key: str = ""
    debounce_key: str = ""
    # The workflow step run this run executes, if any (one run per step run).
    workflow_step_run_id: str = ""
    # A workflow step's retry policy (None: the job's strategy and delays).
    retry_strategy: str | None = None
    retry_initial_ms: int | None = None
    retry_max_ms: int | None = None
    # The TTL (ttl_ms) bounds only the wait for a first start: once claimed, the run no longer expires (a workflow
    # step's schedule_to_start_timeout).
    ttl_until_start: bool = False


# Metadata keys on the job run of a workflow step: the workflow run and the step it executes.
WORKFLOW_RUN_KEY = "workflow_run_id"
WORKFLOW_STEP_KEY = "workflow_step"
MAP_INDEX_KEY = "workflow_map_index"  # in the metadata of a map instance's job run: its item's index


class TriggerRequest(NamedTuple):
    """A trigger call's request_id, and the job as that call named it ("id:<job id>" or "slug:<slug>"):
    a call repeating the id gets the first call's answer instead of new runs."""
    request_id: str
    selector: str
