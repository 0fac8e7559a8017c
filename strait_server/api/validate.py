"""Request validation: protobuf messages in, validated model values out, or INVALID_ARGUMENT with
one field violation per problem. Nothing is written before validation passes."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2
from strait_server import schedule
from strait_server.endpoints import check_url
from strait_server.errors import Violations
from strait_server.model import (
    TRACE_CONTEXT_KEY,
    ApiRateLimit,
    ExecutionMode,
    JobSpec,
    NewRun,
    OverlapPolicy,
    RetryStrategy,
    TriggerRequest,
)

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")  # fullmatch: "$" would let a final newline in
QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_TIMEOUT = timedelta(hours=24)
MAX_BATCH = 1000
# Run metadata keys forwarded to the endpoint as headers (W3C trace context and friends).
TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage", "sentry-trace"})
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]{0,1024}")

JOB_MUTABLE_PATHS = frozenset({
    "slug", "name", "description", "endpoint_url", "fallback_endpoint_url", "execution_mode", "queue",
    "max_attempts", "timeout", "retry_policy", "retry_policy.strategy", "retry_policy.initial_delay",
    "retry_policy.max_delay", "priority", "enabled", "signing_secret", "tags", "metadata", "cron", "timezone",
    "cron_overlap_policy", "run_ttl", "max_concurrency", "max_concurrency_per_key", "rate_limit_max",
    "rate_limit_window", "execution_window_cron", "poison_pill_threshold", "dedup_window", "debounce_window",
    "max_run_cost_microusd",
})
MAX_RUN_COST_MICROUSD = 10**12  # what ReportCost takes in one call, too
MAX_RATE_WINDOW = timedelta(days=1)
MAX_TTL = timedelta(days=30)


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
    # nanos beyond 999,999,999 is no Duration at all (protobuf's own rule), not a longer one.
    return d.seconds >= 0 and 0 <= d.nanos <= 999_999_999 and d.seconds <= 10 * 365 * 86400


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# NaN and Infinity are not JSON; one decoder instance (building one per call shows up in batch profiles).
STRICT_JSON = json.JSONDecoder(parse_constant=_no_constants)


def check_json(v: Violations, path: str, text: str, max_bytes: int, *, object_only: bool = False) -> Any:
    """The parsed JSON text, or None after adding a violation: too long, not JSON (NaN and friends
    included), not an object when one is required, or holding NUL (PostgreSQL text and jsonb refuse it)."""
    if len(text.encode("utf-8", errors="surrogatepass")) > max_bytes:
        v.add(path, f"must be at most {max_bytes} bytes")
        return None
    try:
        parsed = STRICT_JSON.decode(text)
    except (ValueError, RecursionError):
        v.add(path, "must be valid JSON")
        return None
    if object_only and not isinstance(parsed, dict):
        v.add(path, "must be a JSON object")
        return None
    if "\x00" in text or "\\u0000" in text:
        v.add(path, "must not contain NUL characters")
        return None
    return parsed


def check_payload(v: Violations, path: str, payload: str, max_bytes: int) -> str:
    if not payload:
        return "{}"
    if not _plainly_json_object(payload, max_bytes):
        check_json(v, path, payload, max_bytes, object_only=True)
    return payload


def _plainly_json_object(text: str, max_bytes: int) -> bool:
    """The fast path for the common case (a batch checks up to 1,000 payloads), where the parsed value is not
    needed: orjson parses 3-4x faster than the json module. False means only "not shown here": whatever
    orjson refuses, check_json judges and explains."""
    if len(text) * 4 > max_bytes or "\x00" in text or "\\u0000" in text:
        return False
    try:
        return type(orjson.loads(text)) is dict
    except orjson.JSONDecodeError:
        return False


class _Fields:
    """Which job fields a request sets: all of them on create, the update mask's on update."""

    def __init__(self, job: job_pb2.Job, base: JobSpec | None, paths: frozenset[str] | None) -> None:
        self.job, self.base, self.paths = job, base, paths

    def given(self, name: str) -> bool:
        if self.base is None or self.paths is None:
            return True
        # "retry_policy" names all of its sub-fields; "retry_policy.max_delay" names only that one.
        return any(p == name or p.startswith(name + ".") or name.startswith(p + ".") for p in self.paths)

    def pick(self, name: str, fresh: Any) -> Any:
        return fresh if self.given(name) else getattr(self.base, name)


def job_spec(v: Violations, job: job_pb2.Job, *, allow_private: bool, base: JobSpec | None = None,
             paths: frozenset[str] | None = None) -> JobSpec:
    """Builds the job's full spec: fields outside `paths` come from `base` (update), the rest from `job`."""
    f = _Fields(job, base, paths)
    slug, name, description = _names(v, f)
    mode = _mode(v, f)
    endpoint, fallback = _endpoints(v, f, allow_private) if mode is ExecutionMode.HTTP else _no_endpoints(v, f)
    strategy, initial_ms, max_ms = _retry_policy(v, job, base, f.given)
    tags = f.pick("tags", dict(job.tags))
    check_map(v, "job.tags", tags, max_entries=20)
    metadata = f.pick("metadata", dict(job.metadata))
    check_map(v, "job.metadata", metadata)
    return JobSpec(
        slug=slug, name=name, description=description, endpoint_url=endpoint, fallback_endpoint_url=fallback,
        execution_mode=mode, queue=_queue(v, f), max_attempts=_max_attempts(v, f),
        timeout_ms=_job_timeout(v, f), retry_strategy=strategy, retry_initial_ms=initial_ms,
        retry_max_ms=max_ms, priority=_priority(v, f), enabled=_enabled(f), signing_secret=_secret(v, f),
        tags=tags, metadata=metadata, **_schedule(v, f), run_ttl_ms=_job_ttl(v, f),
        **_flow_control(v, f), max_run_cost_microusd=_max_run_cost(v, f),
    )


def _max_run_cost(v: Violations, f: _Fields) -> int:
    value: int = f.pick("max_run_cost_microusd", f.job.max_run_cost_microusd)
    if not 0 <= value <= MAX_RUN_COST_MICROUSD:
        v.add("job.max_run_cost_microusd", f"must be between 0 (the server default) and {MAX_RUN_COST_MICROUSD:,}")
    return value


def _window_ms(v: Violations, f: _Fields, name: Literal["dedup_window", "debounce_window"]) -> int:
    if not f.given(name):
        assert f.base is not None
        return int(getattr(f.base, f"{name}_ms"))
    if not f.job.HasField(name):
        return 0
    d = getattr(f.job, name)
    if not _duration_ok(d) or not 1000 <= _duration_ms(d) <= MAX_TTL.total_seconds() * 1000:
        v.add(f"job.{name}", "must be between 1s and 30 days")
        return -1
    return _duration_ms(d)


def _flow_control(v: Violations, f: _Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, top in (("max_concurrency", 100_000), ("max_concurrency_per_key", 100_000),
                      ("rate_limit_max", 1_000_000), ("poison_pill_threshold", 100)):
        value: int = f.pick(name, getattr(f.job, name))
        if not 0 <= value <= top:
            v.add(f"job.{name}", f"must be between 0 (off) and {top}")
        out[name] = value
    if f.given("rate_limit_window"):
        window = f.job.rate_limit_window
        ms = _duration_ms(window) if f.job.HasField("rate_limit_window") and _duration_ok(window) else 0
        if f.job.HasField("rate_limit_window") and not 1000 <= ms <= MAX_RATE_WINDOW.total_seconds() * 1000:
            v.add("job.rate_limit_window", "must be between 1s and 24h")
            ms = -1  # reported; not "missing" as well
        out["rate_limit_window_ms"] = ms
    else:
        assert f.base is not None
        out["rate_limit_window_ms"] = f.base.rate_limit_window_ms
    if out["rate_limit_window_ms"] >= 0 and bool(out["rate_limit_max"]) != bool(out["rate_limit_window_ms"]):
        v.add("job.rate_limit_window" if out["rate_limit_max"] else "job.rate_limit_max",
              "rate_limit_max and rate_limit_window are set together (both, or neither)")
    out["dedup_window_ms"] = _window_ms(v, f, "dedup_window")
    out["debounce_window_ms"] = _window_ms(v, f, "debounce_window")
    if out["dedup_window_ms"] > 0 and out["debounce_window_ms"] > 0:
        v.add("job.debounce_window", "cannot be combined with dedup_window (a debounced job has one pending run "
              "per key already)")
    window_cron = " ".join(f.pick("execution_window_cron", f.job.execution_window_cron).split())
    if window_cron and (problem := schedule.cron_problem(window_cron)) is not None:
        v.add("job.execution_window_cron", problem)
    out["execution_window_cron"] = window_cron
    return out


def _ttl_ms(v: Violations, path: str, d: Duration) -> int:
    if not _duration_ok(d) or not 0 <= _duration_ms(d) <= MAX_TTL.total_seconds() * 1000:
        v.add(path, "must be between 0s and 30 days")
        return 0
    return _duration_ms(d)


def _job_ttl(v: Violations, f: _Fields) -> int:
    if not f.given("run_ttl"):
        assert f.base is not None
        return f.base.run_ttl_ms
    return _ttl_ms(v, "job.run_ttl", f.job.run_ttl) if f.job.HasField("run_ttl") else 0


_OVERLAP: dict[int, OverlapPolicy] = {
    job_pb2.CRON_OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy.ALLOW,
    job_pb2.CRON_OVERLAP_POLICY_ALLOW: OverlapPolicy.ALLOW,
    job_pb2.CRON_OVERLAP_POLICY_SKIP: OverlapPolicy.SKIP,
    job_pb2.CRON_OVERLAP_POLICY_CANCEL_RUNNING: OverlapPolicy.CANCEL_RUNNING,
}


def cron_schedule(v: Violations, prefix: str, cron: str, tz: str) -> tuple[str, str]:
    """A schedule's expression (runs of spaces collapsed) and time zone (empty: UTC), with a violation on
    `<prefix>.cron` or `<prefix>.timezone` for each one refused. The rules of jobs and workflows alike."""
    cron = " ".join(cron.split())
    if cron and (problem := schedule.cron_problem(cron)) is not None:
        v.add(f"{prefix}.cron", problem)
    tz = tz or "UTC"
    if schedule.zone(tz) is None:
        v.add(f"{prefix}.timezone", "is not an IANA time zone (e.g. Europe/Berlin, UTC)")
    return cron, tz


def overlap_policy(v: Violations, path: str, number: int) -> OverlapPolicy:
    """A CronOverlapPolicy number as the model's policy (UNSPECIFIED: ALLOW)."""
    policy = _OVERLAP.get(number)
    if policy is None:
        v.add(path, "is not a known overlap policy")
        return OverlapPolicy.ALLOW
    return policy


def _schedule(v: Violations, f: _Fields) -> dict[str, Any]:
    cron, tz = cron_schedule(v, "job", f.pick("cron", f.job.cron), f.pick("timezone", f.job.timezone))
    if f.given("cron_overlap_policy"):
        policy = overlap_policy(v, "job.cron_overlap_policy", f.job.cron_overlap_policy)
    else:
        assert f.base is not None
        policy = f.base.cron_overlap_policy
    return {"cron": cron, "timezone": tz, "cron_overlap_policy": policy}


def _names(v: Violations, f: _Fields) -> tuple[str, str, str]:
    slug = f.pick("slug", f.job.slug)
    if not SLUG_RE.fullmatch(slug):
        v.add("job.slug", "must be 1-128 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")
    elif slug.startswith("job_"):
        v.add("job.slug", "must not start with 'job_' (reserved for job ids)")
    name = f.pick("name", f.job.name or slug)
    check_text(v, "job.name", name, max_len=255)
    description = f.pick("description", f.job.description)
    check_text(v, "job.description", description, max_len=2000)
    return slug, name, description


def _mode(v: Violations, f: _Fields) -> ExecutionMode:
    if not f.given("execution_mode"):
        assert f.base is not None
        return f.base.execution_mode
    if f.job.execution_mode == job_pb2.EXECUTION_MODE_WORKER:
        return ExecutionMode.WORKER
    if f.job.execution_mode not in (job_pb2.EXECUTION_MODE_UNSPECIFIED, job_pb2.EXECUTION_MODE_HTTP):
        v.add("job.execution_mode", "is not a known execution mode")
    return ExecutionMode.HTTP


def _no_endpoints(v: Violations, f: _Fields) -> tuple[str, str]:
    """A worker job: its workers run it, so it has no endpoint."""
    for name in ("endpoint_url", "fallback_endpoint_url"):
        if f.given(name) and getattr(f.job, name):
            v.add(f"job.{name}", "must be empty for a worker job (its workers run it)")
    return "", ""


def _endpoints(v: Violations, f: _Fields, allow_private: bool) -> tuple[str, str]:
    endpoint = f.pick("endpoint_url", f.job.endpoint_url)
    if not endpoint:
        v.add("job.endpoint_url", "is required for HTTP jobs")
    elif (problem := check_url(endpoint, allow_private=allow_private)) is not None:
        v.add("job.endpoint_url", problem)
    fallback = f.pick("fallback_endpoint_url", f.job.fallback_endpoint_url)
    if fallback and (problem := check_url(fallback, allow_private=allow_private)) is not None:
        v.add("job.fallback_endpoint_url", problem)
    return endpoint, fallback


def _queue(v: Violations, f: _Fields) -> str:
    queue: str = f.pick("queue", f.job.queue or "default")
    if not QUEUE_RE.fullmatch(queue):
        v.add("job.queue", "must be 1-63 characters of A-Z, a-z, 0-9, '-' or '_'")
    return queue


def _max_attempts(v: Violations, f: _Fields) -> int:
    value: int = f.pick("max_attempts", f.job.max_attempts or 3)
    if not 1 <= value <= 100:
        v.add("job.max_attempts", "must be between 1 and 100")
    return value


def _job_timeout(v: Violations, f: _Fields) -> int:
    if not f.given("timeout"):
        assert f.base is not None
        return f.base.timeout_ms
    return _timeout_ms(v, "job.timeout", f.job.timeout) if f.job.HasField("timeout") else 300_000


def _priority(v: Violations, f: _Fields) -> int:
    value: int = f.pick("priority", f.job.priority)
    if not 0 <= value <= 10:
        v.add("job.priority", "must be between 0 and 10")
    return value


def _enabled(f: _Fields) -> bool:
    if f.given("enabled"):
        return f.job.enabled if f.job.HasField("enabled") else True
    assert f.base is not None
    return f.base.enabled


def _secret(v: Violations, f: _Fields) -> str:
    secret: str = f.pick("signing_secret", f.job.signing_secret)
    if secret and not 16 <= len(secret) <= 4096:
        v.add("job.signing_secret", "must be 16 to 4096 characters")
    elif _has_nul(secret):
        v.add("job.signing_secret", "must not contain NUL characters")
    return secret


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
    return mask_paths(v, paths, JOB_MUTABLE_PATHS, "job")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31, as protobuf's


def timestamp(v: Violations, path: str, ts: Timestamp) -> datetime | None:
    at = _datetime_of(ts.seconds, ts.nanos)
    if at is None:
        v.add(path, "is not a valid timestamp")
    return at


@functools.lru_cache(maxsize=4096)
def _datetime_of(seconds: int, nanos: int) -> datetime | None:
    """Arithmetic rather than Timestamp.ToDatetime (a third of a scheduled batch item's cost), cached: the runs
    of a batch are often scheduled for the same time."""
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def run_options(v: Violations, path: str, options: job_pb2.RunOptions, *, max_payload: int,
                now: datetime) -> NewRun:
    """One run's options. Only the fields present are looked at: a batch holds up to 1,000 of these."""
    payload = "{}"
    values: dict[str, Any] = {}
    # The payload's field path is only formatted for a violation.
    for descriptor, value in options.ListFields():
        name = descriptor.name
        if name == "payload_json":
            payload = value if _plainly_json_object(value, max_payload) else check_payload(
                v, f"{path}.payload_json", value, max_payload)
        elif name == "scheduled_time":
            values[name] = scheduled = timestamp(v, f"{path}.scheduled_time", value)
            if scheduled is not None and scheduled - now > MAX_SCHEDULE_AHEAD:
                v.add(f"{path}.scheduled_time", "must be at most 30 days ahead")
        else:
            _run_option(v, f"{path}.{name}", name, value, values)
    return NewRun(payload=payload, **values) if values else NewRun(payload=payload)


def _run_option(v: Violations, path: str, name: str, value: Any, values: dict[str, Any]) -> None:
    """Checks one set RunOptions field (not the payload or schedule) into `values`, NewRun's keyword arguments."""
    if name in _RUN_RANGES:
        low, high = _RUN_RANGES[name]
        if not low <= value <= high:
            v.add(path, f"must be between {low} and {high}")
        values[name] = value
    elif name == "timeout":
        values["timeout_ms"] = _timeout_ms(v, path, value)
    elif name == "ttl":
        values["ttl_ms"] = _ttl_ms(v, path, value)
    elif name in _RUN_KEYS:
        check_text(v, path, value, max_len=256)
        values[name] = value
    elif name == "tags":
        values[name] = tags = dict(value)
        check_map(v, path, tags, max_entries=20)
    elif name == "metadata":
        values[name] = metadata = dict(value)
        _run_metadata(v, path, metadata)


def _run_metadata(v: Violations, path: str, metadata: dict[str, str]) -> None:
    check_map(v, path, metadata)
    for key in TRACE_KEYS & metadata.keys():
        if not _HEADER_VALUE_RE.fullmatch(metadata[key]):
            v.add(f"{path}[{key!r}]", "is forwarded as an HTTP header: printable ASCII only")
    if TRACE_CONTEXT_KEY in metadata:
        v.add(f"{path}[{TRACE_CONTEXT_KEY!r}]", "is reserved for Strait's own trace context")


_RUN_RANGES = {"priority": (0, 10), "max_attempts": (1, 100)}
_RUN_KEYS = frozenset({"idempotency_key", "concurrency_key", "dedup_key", "debounce_key"})


def selector(v: Violations, request: Any) -> tuple[str, str]:
    """(id, slug) from a request's `selector` oneof; exactly one is required."""
    which = request.WhichOneof("selector")
    if which is None or not getattr(request, which):
        v.add("selector", "set id or slug")
        return "", ""
    value = getattr(request, which)
    check_text(v, which, value, max_len=128)
    return (value, "") if which == "id" else ("", value)


def trigger_request(v: Violations, request: Any) -> TriggerRequest | None:
    """A trigger's request_id (AIP-155) with the job as the request names it; None without an id."""
    value: str = request.request_id
    if not value:
        return None
    if len(value) > 64 or not all("!" <= c <= "~" for c in value):
        v.add("request_id", "must be 1-64 printable ASCII characters without spaces (a UUID, say)")
        return None
    which = request.WhichOneof("selector") or "id"
    return TriggerRequest(value, f"{which}:{getattr(request, which)}")


def utc_now() -> datetime:
    return datetime.now(UTC)


MIN_API_RATE_WINDOW = timedelta(seconds=1)
MAX_API_RATE_WINDOW = timedelta(days=1)


def api_rate_limit(v: Violations, path: str, message: Any) -> ApiRateLimit | None:
    """The `api_rate_limit` field of a message (a strait.v1.ApiRateLimit), or None when it is unset."""
    if not message.HasField("api_rate_limit"):
        return None
    limit = message.api_rate_limit
    if limit.requests < 1:
        v.add(f"{path}.requests", "must be at least 1")
    window = limit.window
    if not _duration_ok(window) or window.nanos % 1_000_000:
        v.add(f"{path}.window", "must be a positive duration in whole milliseconds")
        return None
    ms = _duration_ms(window)
    if not MIN_API_RATE_WINDOW <= timedelta(milliseconds=ms) <= MAX_API_RATE_WINDOW:
        v.add(f"{path}.window", "must be from 1s to 1d")
    return ApiRateLimit(requests=limit.requests, window=timedelta(milliseconds=ms))


def mask_paths(v: Violations, paths: list[str], allowed: frozenset[str], what: str) -> frozenset[str]:
    """The paths of an update_mask, each of which must be one of `allowed`."""
    if not paths:
        v.add("update_mask", "is required: name the fields to change")
    for p in paths:
        if p not in allowed:
            v.add("update_mask", f"{p!r} is not an updatable {what} field")
    return frozenset(paths)
