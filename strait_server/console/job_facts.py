"""A job's settings as the job page shows them: labelled, in sections, with what an unset value means spelled out
(the API's zeros and empty strings mean "off" or "the default", which a reader should not have to know)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from strait_client._enums import ExecutionMode, RetryStrategy, RunStatus
from strait_client._models import Job, Run
from strait_server.console.web import when

FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED,
                      RunStatus.SYSTEM_FAILED, RunStatus.CANCELED, RunStatus.EXPIRED, RunStatus.DEAD_LETTER})
Facts = list[tuple[str, str]]


@dataclass(frozen=True)
class Section:
    title: str
    facts: Facts


@dataclass(frozen=True)
class SuccessRate:
    """Completed runs among the finished ones of a sample of runs."""

    completed: int
    finished: int

    @property
    def percent(self) -> int | None:
        return round(100 * self.completed / self.finished) if self.finished else None


def success_rate(runs: list[Run]) -> SuccessRate:
    finished = [r for r in runs if r.status in FINISHED]
    return SuccessRate(sum(r.status is RunStatus.COMPLETED for r in finished), len(finished))


def span(value: timedelta | None, unset: str = "—") -> str:
    """A duration the way people write it: 1h 30m, 45s, 250ms."""
    if value is None:
        return unset
    ms = round(value.total_seconds() * 1000)
    if ms < 1000:
        return f"{ms}ms"
    parts, seconds = [], ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts)


def mode(job: Job) -> str:
    return "worker" if job.execution_mode is ExecutionMode.WORKER else "HTTP"


def target(job: Job) -> str:
    """Where runs go: the endpoint of an HTTP job, the queue of a worker job."""
    return f"queue {job.queue or 'default'}" if job.execution_mode is ExecutionMode.WORKER else job.endpoint_url


def schedule(job: Job) -> str:
    if not job.cron:
        return "none"
    text = f"{job.cron} ({job.timezone or 'UTC'})"
    return f"{text}, paused" if job.schedule_paused else text


def _limit(value: int, unit: str = "") -> str:
    return f"{value}{unit}" if value else "no limit"


def _dispatch(job: Job) -> Section:
    facts: Facts = [("Mode", mode(job))]
    if job.execution_mode is ExecutionMode.WORKER:
        facts.append(("Queue", job.queue or "default"))
    else:
        facts.append(("Endpoint", job.endpoint_url))
        facts.append(("Fallback endpoint", job.fallback_endpoint_url or "none"))
        facts.append(("Signed requests", "yes" if job.has_signing_secret else "no"))
    facts += [("Timeout per attempt", span(job.timeout)), ("Priority", str(job.priority))]
    return Section("Dispatch", facts)


def _retries(job: Job) -> Section:
    policy = job.retry_policy
    strategy = "fixed delay" if policy.strategy is RetryStrategy.FIXED else "exponential backoff"
    return Section("Retry policy", [
        ("Attempts", f"up to {job.max_attempts}"),
        ("Strategy", strategy),
        ("First delay", span(policy.initial_delay, "1s (default)")),
        ("Longest delay", span(policy.max_delay, "1h (default)")),
        ("Poison pill", f"after {job.poison_pill_threshold} identical failures in a row"
                        if job.poison_pill_threshold else "off"),
    ])


def _flow_control(job: Job) -> Section:
    rate = (f"{job.rate_limit_max} runs per {span(job.rate_limit_window)}" if job.rate_limit_max
            else "no limit")
    return Section("Flow control", [
        ("Concurrency", _limit(job.max_concurrency, " at once")),
        ("Concurrency per key", _limit(job.max_concurrency_per_key, " at once")),
        ("Start rate", rate),
        ("Execution window", job.execution_window_cron or "always open"),
        ("Run time to live", span(job.run_ttl, "runs never expire")),
        ("Deduplication window", span(job.dedup_window, "off")),
        ("Debounce window", span(job.debounce_window, "off")),
    ])


def _schedule(job: Job) -> Section:
    facts: Facts = [("Cron", schedule(job))]
    if job.cron:
        overlap = job.cron_overlap_policy.value.replace("_", " ") if job.cron_overlap_policy else "allow"
        facts.append(("While a run is active", overlap))
        if not job.schedule_paused:
            facts.append(("Next tick", when(job.next_fire_time)))
    return Section("Schedule", facts)


def sections(job: Job) -> list[Section]:
    return [_dispatch(job), _retries(job), _flow_control(job), _schedule(job)]
