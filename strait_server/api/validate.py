"""Request validation: protobuf messages in, validated model values out, or INVALID_ARGUMENT with
one field violation per problem. Nothing is written before validation passes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2
from strait_server.endpoints import check_url
from strait_server.errors import Violations
from strait_server.model import ExecutionMode, JobSpec, NewRun, RetryStrategy

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_TIMEOUT = timedelta(hours=24)
MAX_BATCH = 1000

JOB_MUTABLE_PATHS = frozenset({
    "slug", "name", "description", "endpoint_url", "fallback_endpoint_url", "execution_mode", "queue",
    "max_attempts", "timeout", "retry_policy", "retry_policy.strategy", "retry_policy.initial_delay",
    "retry_policy.max_delay", "priority", "enabled", "signing_secret", "tags", "metadata",
})


def _has_nul(value: str) -> bool:
    return "\x00" in value


def check_text(v: Violations, path: str, value: str, *, max_len: int, required: bool = False) -> None:
    if required and not value:
        v.add(path, "is required")
    elif len(value) > max_len:
        v.add(path, f"must be at most {max_len} characters")
    elif _has_nul(value):
        v.add(path, "must not contain NUL characters")


def check_map(v: Violations, path: str, values: Mapping[str, str], *, max_entries: int = 64) -> None:
    if len(values) > max_entries:
        v.add(path, f"must have at most {max_entries} entries")
        return
    for key, value in values.items():
        if not key or len(key) > 64 or _has_nul(key):
            v.add(f"{path}[{key!r}]", "keys must be 1-64 characters without NUL")
        elif len(value) > 1024 or _has_nul(value):
            v.add(f"{path}[{key!r}]", "values must be at most 1024 characters without NUL")


def _duration_ms(d: Duration) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000


def _duration_ok(d: Duration) -> bool:
    return d.seconds >= 0 and d.nanos >= 0 and d.seconds <= 10 * 365 * 86400


def check_payload(v: Violations, path: str, payload: str, max_bytes: int) -> str:
    if not payload:
        return "{}"
    if len(payload.encode("utf-8", errors="surrogatepass")) > max_bytes:
        v.add(path, f"must be at most {max_bytes} bytes")
        return payload

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        parsed = json.loads(payload, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        v.add(path, "must be valid JSON")
        return payload
    if not isinstance(parsed, dict):
        v.add(path, "must be a JSON object")
    elif "\x00" in payload or "\\u0000" in payload:
        v.add(path, "must not contain NUL characters")
    return payload


def job_spec(v: Violations, job: job_pb2.Job, *, allow_private: bool, base: JobSpec | None = None,
             paths: frozenset[str] | None = None) -> JobSpec:
    """Builds the job's full spec: fields outside `paths` come from `base` (update), the rest from `job`."""

    def given(name: str) -> bool:
        if base is None or paths is None:
            return True
        return name in paths or any(p.startswith(name + ".") for p in paths)

    def pick(name: str, fresh: Any) -> Any:
        return fresh if given(name) else getattr(base, name)

    slug = pick("slug", job.slug)
    if not SLUG_RE.match(slug):
        v.add("job.slug", "must be 1-128 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")
    name = pick("name", job.name or slug)
    check_text(v, "job.name", name, max_len=255)
    description = pick("description", job.description)
    check_text(v, "job.description", description, max_len=2000)

    mode_value = job.execution_mode if given("execution_mode") else None
    mode = base.execution_mode if mode_value is None and base else ExecutionMode.HTTP
    if mode_value == job_pb2.EXECUTION_MODE_WORKER:
        v.add("job.execution_mode", "WORKER is reserved and not available yet; use HTTP")
    elif mode_value not in (None, job_pb2.EXECUTION_MODE_UNSPECIFIED, job_pb2.EXECUTION_MODE_HTTP):
        v.add("job.execution_mode", "is not a known execution mode")

    endpoint = pick("endpoint_url", job.endpoint_url)
    if not endpoint:
        v.add("job.endpoint_url", "is required for HTTP jobs")
    elif (problem := check_url(endpoint, allow_private=allow_private)) is not None:
        v.add("job.endpoint_url", problem)
    fallback = pick("fallback_endpoint_url", job.fallback_endpoint_url)
    if fallback and (problem := check_url(fallback, allow_private=allow_private)) is not None:
        v.add("job.fallback_endpoint_url", problem)

    queue = pick("queue", job.queue or "default")
    if not QUEUE_RE.match(queue):
        v.add("job.queue", "must be 1-63 characters of A-Z, a-z, 0-9, '-' or '_'")

    max_attempts = pick("max_attempts", job.max_attempts or 3)
    if not 1 <= max_attempts <= 100:
        v.add("job.max_attempts", "must be between 1 and 100")

    timeout_ms = base.timeout_ms if base and not given("timeout") else 300_000
    if given("timeout") and job.HasField("timeout"):
        timeout_ms = _timeout_ms(v, "job.timeout", job.timeout)

    strategy, initial_ms, max_ms = _retry_policy(v, job, base, given)

    priority = pick("priority", job.priority)
    if not 0 <= priority <= 10:
        v.add("job.priority", "must be between 0 and 10")

    if given("enabled"):
        enabled = job.enabled if job.HasField("enabled") else True
    else:
        assert base is not None
        enabled = base.enabled

    secret = pick("signing_secret", job.signing_secret)
    if secret and not 16 <= len(secret) <= 4096:
        v.add("job.signing_secret", "must be 16 to 4096 characters")
    elif _has_nul(secret):
        v.add("job.signing_secret", "must not contain NUL characters")

    tags = pick("tags", dict(job.tags))
    check_map(v, "job.tags", tags, max_entries=20)
    metadata = pick("metadata", dict(job.metadata))
    check_map(v, "job.metadata", metadata)

    return JobSpec(
        slug=slug, name=name, description=description, endpoint_url=endpoint, fallback_endpoint_url=fallback,
        execution_mode=mode, queue=queue, max_attempts=max_attempts, timeout_ms=timeout_ms,
        retry_strategy=strategy, retry_initial_ms=initial_ms, retry_max_ms=max_ms, priority=priority,
        enabled=enabled, signing_secret=secret, tags=tags, metadata=metadata,
    )


def _timeout_ms(v: Violations, path: str, d: Duration) -> int:
    if not _duration_ok(d) or not 1000 <= _duration_ms(d) <= MAX_TIMEOUT.total_seconds() * 1000:
        v.add(path, "must be between 1s and 24h")
        return 300_000
    return _duration_ms(d)


def _retry_policy(v: Violations, job: job_pb2.Job, base: JobSpec | None,
                  given: Any) -> tuple[RetryStrategy, int, int]:
    policy = job.retry_policy
    strategy = base.retry_strategy if base else RetryStrategy.EXPONENTIAL
    initial_ms = base.retry_initial_ms if base else 1000
    max_ms = base.retry_max_ms if base else 3_600_000
    if given("retry_policy.strategy"):
        if policy.strategy == job_pb2.RETRY_STRATEGY_FIXED:
            strategy = RetryStrategy.FIXED
        elif policy.strategy in (job_pb2.RETRY_STRATEGY_UNSPECIFIED, job_pb2.RETRY_STRATEGY_EXPONENTIAL):
            strategy = RetryStrategy.EXPONENTIAL
        else:
            v.add("job.retry_policy.strategy", "is not a known retry strategy")
    if given("retry_policy.initial_delay"):
        initial_ms = _duration_ms(policy.initial_delay) if policy.HasField("initial_delay") else 1000
        if not _duration_ok(policy.initial_delay) or initial_ms > 3_600_000:
            v.add("job.retry_policy.initial_delay", "must be between 0s and 1h")
    if given("retry_policy.max_delay"):
        max_ms = _duration_ms(policy.max_delay) if policy.HasField("max_delay") else 3_600_000
        if not _duration_ok(policy.max_delay) or max_ms > 86_400_000:
            v.add("job.retry_policy.max_delay", "must be between 0s and 24h")
    if max_ms < initial_ms:
        v.add("job.retry_policy.max_delay", "must not be shorter than initial_delay")
    return strategy, initial_ms, max_ms


def update_paths(v: Violations, paths: list[str]) -> frozenset[str]:
    if not paths:
        v.add("update_mask", "is required: name the fields to change")
    for p in paths:
        if p not in JOB_MUTABLE_PATHS:
            v.add("update_mask", f"{p!r} is not an updatable job field")
    return frozenset(paths)


def timestamp(v: Violations, path: str, ts: Timestamp) -> datetime | None:
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        v.add(path, "is not a valid timestamp")
        return None


def run_options(v: Violations, path: str, options: job_pb2.RunOptions, *, max_payload: int,
                now: datetime) -> NewRun:
    payload = check_payload(v, f"{path}.payload_json", options.payload_json, max_payload)
    scheduled = None
    if options.HasField("scheduled_time"):
        scheduled = timestamp(v, f"{path}.scheduled_time", options.scheduled_time)
        if scheduled is not None and scheduled - now > MAX_SCHEDULE_AHEAD:
            v.add(f"{path}.scheduled_time", "must be at most 30 days ahead")
    priority = options.priority if options.HasField("priority") else None
    if priority is not None and not 0 <= priority <= 10:
        v.add(f"{path}.priority", "must be between 0 and 10")
    timeout_ms = _timeout_ms(v, f"{path}.timeout", options.timeout) if options.HasField("timeout") else None
    max_attempts = options.max_attempts if options.HasField("max_attempts") else None
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        v.add(f"{path}.max_attempts", "must be between 1 and 100")
    check_text(v, f"{path}.idempotency_key", options.idempotency_key, max_len=256)
    tags, metadata = dict(options.tags), dict(options.metadata)
    check_map(v, f"{path}.tags", tags, max_entries=20)
    check_map(v, f"{path}.metadata", metadata)
    return NewRun(payload=payload, scheduled_time=scheduled, priority=priority, timeout_ms=timeout_ms,
                  max_attempts=max_attempts, idempotency_key=options.idempotency_key, tags=tags,
                  metadata=metadata)


def selector(v: Violations, request: Any) -> tuple[str, str]:
    """(id, slug) from a request's `selector` oneof; exactly one is required."""
    which = request.WhichOneof("selector")
    if which is None or not getattr(request, which):
        v.add("selector", "set id or slug")
        return "", ""
    value = getattr(request, which)
    check_text(v, which, value, max_len=128)
    return (value, "") if which == "id" else ("", value)


def utc_now() -> datetime:
    return datetime.now(UTC)
