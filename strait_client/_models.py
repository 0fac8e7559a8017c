"""What the client returns for jobs, runs and run events: frozen dataclasses decoded from the API's messages.

Field names are the protobuf field names, except that `*_json` text fields are decoded and lose the suffix
(`payload`, `output`, `data`). Enums are StrEnum members (None when unset); timestamps are aware UTC datetimes
and durations timedeltas (None when the server did not set them); maps are dicts and repeated fields tuples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from strait_client._enums import CronOverlapPolicy, ExecutionMode, RetryStrategy, RunStatus, from_proto
from strait_client.v1 import job_pb2, run_pb2


def time_of(message: Message, name: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime; None when unset."""
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def duration_of(message: Message, name: str) -> timedelta | None:
    """A Duration field as a timedelta; None when unset."""
    return getattr(message, name).ToTimedelta() if message.HasField(name) else None


def json_of(text: str) -> Any:
    """A `*_json` field decoded; None for empty text."""
    return json.loads(text) if text else None


@dataclass(frozen=True, slots=True)
class JobRetryPolicy:
    """How a job's failed attempts are retried (Job.retry_policy). Also accepted as input: `jobs.update(job,
    retry_policy=JobRetryPolicy(...))` replaces the whole policy (None fields take the server's defaults)."""

    strategy: RetryStrategy | None = None
    initial_delay: timedelta | None = None
    max_delay: timedelta | None = None

    @classmethod
    def from_proto(cls, m: job_pb2.RetryPolicy) -> JobRetryPolicy:
        """Decodes a strait.v1.RetryPolicy message.

        Args:
            m: The message.

        Returns:
            The policy.
        """
        return cls(from_proto(RetryStrategy, m.strategy), duration_of(m, "initial_delay"), duration_of(m, "max_delay"))


@dataclass(frozen=True, slots=True)
class Job:
    """A job: what to run and how (strait.v1.Job; the write-only `signing_secret` is never returned, see
    `has_signing_secret`). Pass `etag` back to `jobs.update`/`jobs.delete` to refuse stale writes."""

    id: str
    project_id: str
    slug: str
    name: str
    description: str
    endpoint_url: str
    fallback_endpoint_url: str
    execution_mode: ExecutionMode | None
    queue: str
    max_attempts: int
    timeout: timedelta | None
    retry_policy: JobRetryPolicy
    priority: int
    enabled: bool
    has_signing_secret: bool
    tags: Mapping[str, str]
    metadata: Mapping[str, str]
    create_time: datetime | None
    update_time: datetime | None
    etag: str
    cron: str
    timezone: str
    cron_overlap_policy: CronOverlapPolicy | None
    next_fire_time: datetime | None
    schedule_paused: bool
    run_ttl: timedelta | None
    max_concurrency: int
    max_concurrency_per_key: int
    rate_limit_max: int
    rate_limit_window: timedelta | None
    execution_window_cron: str
    poison_pill_threshold: int
    dedup_window: timedelta | None
    debounce_window: timedelta | None
    max_run_cost_microusd: int

    @classmethod
    def from_proto(cls, m: job_pb2.Job) -> Job:
        """Decodes a strait.v1.Job message.

        Args:
            m: The message.

        Returns:
            The job.
        """
        return cls(
            id=m.id, project_id=m.project_id, slug=m.slug, name=m.name, description=m.description,
            endpoint_url=m.endpoint_url, fallback_endpoint_url=m.fallback_endpoint_url,
            execution_mode=from_proto(ExecutionMode, m.execution_mode), queue=m.queue, max_attempts=m.max_attempts,
            timeout=duration_of(m, "timeout"), retry_policy=JobRetryPolicy.from_proto(m.retry_policy),
            priority=m.priority, enabled=m.enabled if m.HasField("enabled") else True,
            has_signing_secret=m.has_signing_secret, tags=dict(m.tags), metadata=dict(m.metadata),
            create_time=time_of(m, "create_time"), update_time=time_of(m, "update_time"), etag=m.etag,
            cron=m.cron, timezone=m.timezone, cron_overlap_policy=from_proto(CronOverlapPolicy, m.cron_overlap_policy),
            next_fire_time=time_of(m, "next_fire_time"), schedule_paused=m.schedule_paused,
            run_ttl=duration_of(m, "run_ttl"), max_concurrency=m.max_concurrency,
            max_concurrency_per_key=m.max_concurrency_per_key, rate_limit_max=m.rate_limit_max,
            rate_limit_window=duration_of(m, "rate_limit_window"), execution_window_cron=m.execution_window_cron,
            poison_pill_threshold=m.poison_pill_threshold, dedup_window=duration_of(m, "dedup_window"),
            debounce_window=duration_of(m, "debounce_window"), max_run_cost_microusd=m.max_run_cost_microusd,
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One dispatch attempt of a run (strait.v1.RunAttempt): `status_code` is the endpoint's HTTP status, 0
    when it gave none (connection error, timeout); `error` is empty on success."""

    attempt: int
    status_code: int
    duration: timedelta | None
    error: str
    endpoint_url: str
    start_time: datetime | None

    @classmethod
    def from_proto(cls, m: run_pb2.RunAttempt) -> AttemptRecord:
        """Decodes a strait.v1.RunAttempt message.

        Args:
            m: The message.

        Returns:
            The attempt.
        """
        return cls(m.attempt, m.status_code, duration_of(m, "duration"), m.error, m.endpoint_url,
                   time_of(m, "start_time"))


def _run_fields(m: run_pb2.Run) -> dict[str, Any]:
    return {
        "id": m.id, "job_id": m.job_id, "project_id": m.project_id, "status": from_proto(RunStatus, m.status),
        "attempt": m.attempt, "max_attempts": m.max_attempts, "priority": m.priority,
        "payload": json_of(m.payload_json), "output": json_of(m.output_json), "error": m.error,
        "scheduled_time": time_of(m, "scheduled_time"), "create_time": time_of(m, "create_time"),
        "start_time": time_of(m, "start_time"), "finish_time": time_of(m, "finish_time"),
        "idempotency_key": m.idempotency_key, "tags": dict(m.tags), "metadata": dict(m.metadata),
        "attempts": tuple(AttemptRecord.from_proto(a) for a in m.attempts), "timeout": duration_of(m, "timeout"),
        "error_class": m.error_class, "replay_of_run_id": m.replay_of_run_id, "update_time": time_of(m, "update_time"),
        "expire_time": time_of(m, "expire_time"), "concurrency_key": m.concurrency_key,
        "wait_reason": m.wait_reason, "cost_microusd": m.cost_microusd, "lost_count": m.lost_count,
    }


@dataclass(frozen=True, slots=True)
class Run:
    """One execution of a job (strait.v1.Run). `payload` and `output` are the decoded JSON (None when empty,
    and `payload` is None in the basic view `jobs.batch_trigger` returns unless `full=True`). `status` is
    None only for a status this client version does not know."""

    id: str
    job_id: str
    project_id: str
    status: RunStatus | None
    attempt: int
    max_attempts: int
    priority: int
    payload: Any
    output: Any
    error: str
    scheduled_time: datetime | None
    create_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    idempotency_key: str
    tags: Mapping[str, str]
    metadata: Mapping[str, str]
    attempts: tuple[AttemptRecord, ...]
    timeout: timedelta | None
    error_class: str
    replay_of_run_id: str
    update_time: datetime | None
    expire_time: datetime | None
    concurrency_key: str
    wait_reason: str
    cost_microusd: int
    lost_count: int

    @classmethod
    def from_proto(cls, m: run_pb2.Run) -> Run:
        """Decodes a strait.v1.Run message.

        Args:
            m: The message.

        Returns:
            The run.
        """
        return cls(**_run_fields(m))

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished (its status is in TERMINAL_STATUSES)."""
        return self.status is not None and self.status.is_terminal


@dataclass(frozen=True, slots=True)
class TriggeredRun(Run):
    """The run a trigger or replay returns: a Run, plus what the server did with the call.

    `idempotent_repeat`: the call created no run; the run returned already existed. From `jobs.trigger` and
    `runs.replay` it means the idempotency key matched; from `jobs.batch_trigger` it means any of the three
    reasons (idempotency key, dedup window, debounce), which a batch reply does not tell apart.
    `deduplicated`: the job's dedup window matched a recent identical trigger, whose run is returned.
    `debounced`: the trigger joined the job's pending debounced run (returned with the new payload).
    Both are None from `jobs.batch_trigger` (not reported there) and False from `runs.replay`."""

    idempotent_repeat: bool = False
    deduplicated: bool | None = False
    debounced: bool | None = False

    @classmethod
    def from_response(cls, m: run_pb2.Run, idempotent_repeat: bool, deduplicated: bool | None = False,
                      debounced: bool | None = False) -> TriggeredRun:
        """Decodes a run and the flags of the reply that carried it.

        Args:
            m: The strait.v1.Run message.
            idempotent_repeat: The reply's idempotent_repeat (or the run's idempotent_repeats item).
            deduplicated: The reply's deduplicated; None when the reply does not say.
            debounced: The reply's debounced; None when the reply does not say.

        Returns:
            The run with its flags.
        """
        return cls(**_run_fields(m), idempotent_repeat=idempotent_repeat, deduplicated=deduplicated,
                   debounced=debounced)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """What happened to a run (strait.v1.RunEvent), in `sequence` order per run. `type` is "status_change",
    "log", "progress", "checkpoint", "waiting", ... (docs/events.md); `from_status`/`to_status` are set on
    status changes (`from_status` None on the first); `data` is the decoded type-specific JSON object."""

    run_id: str
    sequence: int
    type: str
    from_status: RunStatus | None
    to_status: RunStatus | None
    message: str
    data: Any
    create_time: datetime | None
    job_id: str
    attempt: int

    @classmethod
    def from_proto(cls, m: run_pb2.RunEvent) -> RunEvent:
        """Decodes a strait.v1.RunEvent message.

        Args:
            m: The message.

        Returns:
            The event.
        """
        return cls(m.run_id, m.sequence, m.type, from_proto(RunStatus, m.from_status),
                   from_proto(RunStatus, m.to_status), m.message, json_of(m.data_json), time_of(m, "create_time"),
                   m.job_id, m.attempt)

    @property
    def ends_run(self) -> bool:
        """Whether this is the run's terminal status change (no event of the run follows it)."""
        return self.type == "status_change" and self.to_status is not None and self.to_status.is_terminal


@dataclass(frozen=True, slots=True)
class FeedEvent(RunEvent):
    """An event of the project feed (`runs.watch_all`): a RunEvent plus the token to resume the feed after it."""

    resume_token: str = ""

    @classmethod
    def from_feed(cls, m: run_pb2.RunEvent, resume_token: str) -> FeedEvent:
        """Decodes an event and the resume token of the feed message that carried it.

        Args:
            m: The strait.v1.RunEvent message.
            resume_token: The WatchRunsResponse's resume_token.

        Returns:
            The event with its token.
        """
        event = RunEvent.from_proto(m)
        return cls(event.run_id, event.sequence, event.type, event.from_status, event.to_status, event.message,
                   event.data, event.create_time, event.job_id, event.attempt, resume_token)
