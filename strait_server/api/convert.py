"""Model -> protobuf conversion. Proto types stop here; nothing below api/ sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2, project_pb2, run_pb2
from strait_server import model

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(value: datetime) -> Timestamp:
    micros = (value - _EPOCH) // _MICRO
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def ts(value: datetime | None) -> Timestamp | None:
    # Timestamp.FromDatetime is pure Python and shows up in batch responses; this is the same arithmetic.
    if value is None:
        return None
    micros = (value - _EPOCH) // _MICRO
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def duration_ms(ms: float) -> Duration:
    out = Duration()
    out.FromMilliseconds(int(ms))
    return out


def run_status(status: str) -> int:
    return int(run_pb2.RunStatus.Value("RUN_STATUS_" + status.upper())) if status else 0


def status_name(value: int) -> str:
    """RUN_STATUS_DEAD_LETTER -> dead_letter (raises ValueError for unknown numbers)."""
    return str(run_pb2.RunStatus.Name(value)).removeprefix("RUN_STATUS_").lower()  # type: ignore[arg-type]


_STATUS_NUMBERS = {s: run_status(s.value) for s in model.RunStatus}


def api_rate_limit(limit: model.ApiRateLimit | None) -> project_pb2.ApiRateLimit | None:
    if limit is None:
        return None
    return project_pb2.ApiRateLimit(requests=limit.requests,
                                    window=duration_ms(limit.window.total_seconds() * 1000))


def project(p: model.Project) -> project_pb2.Project:
    return project_pb2.Project(id=p.id, slug=p.slug, name=p.name, create_time=ts(p.create_time),
                               api_rate_limit=api_rate_limit(p.api_rate_limit),
                               monthly_budget_microusd=p.monthly_budget_microusd,
                               budget_action=_BUDGET_ACTIONS[p.budget_action],
                               month_to_date_spend_microusd=p.month_spend_microusd)


_BUDGET_ACTIONS = {"notify": project_pb2.BUDGET_ACTION_NOTIFY, "reject": project_pb2.BUDGET_ACTION_REJECT}


def api_key(k: model.ApiKey) -> project_pb2.ApiKey:
    return project_pb2.ApiKey(id=k.id, project_id=k.project_id, name=k.name, key_prefix=k.key_prefix,
                              create_time=ts(k.create_time), revoke_time=ts(k.revoke_time),
                              api_rate_limit=api_rate_limit(k.api_rate_limit), scopes=list(k.scopes))


def job(j: model.Job) -> job_pb2.Job:
    strategy = (job_pb2.RETRY_STRATEGY_FIXED if j.retry_strategy is model.RetryStrategy.FIXED
                else job_pb2.RETRY_STRATEGY_EXPONENTIAL)
    return job_pb2.Job(
        id=j.id, project_id=j.project_id, slug=j.slug, name=j.name, description=j.description,
        endpoint_url=j.endpoint_url, fallback_endpoint_url=j.fallback_endpoint_url,
        execution_mode=(job_pb2.EXECUTION_MODE_WORKER if j.execution_mode is model.ExecutionMode.WORKER
                        else job_pb2.EXECUTION_MODE_HTTP),
        queue=j.queue, max_attempts=j.max_attempts, timeout=duration_ms(j.timeout_ms),
        retry_policy=job_pb2.RetryPolicy(strategy=strategy, initial_delay=duration_ms(j.retry_initial_ms),
                                         max_delay=duration_ms(j.retry_max_ms)),
        priority=j.priority, enabled=j.enabled, has_signing_secret=bool(j.signing_secret),
        tags=j.tags, metadata=j.metadata, create_time=ts(j.create_time), update_time=ts(j.update_time),
        etag=j.etag, cron=j.cron, timezone=j.timezone, schedule_paused=j.schedule_paused,
        run_ttl=duration_ms(j.run_ttl_ms) if j.run_ttl_ms else None,
        next_fire_time=ts(j.next_fire_time) if j.cron and not j.schedule_paused else None,
        cron_overlap_policy=_OVERLAP_NUMBERS[j.cron_overlap_policy],
        max_concurrency=j.max_concurrency, max_concurrency_per_key=j.max_concurrency_per_key,
        rate_limit_max=j.rate_limit_max,
        rate_limit_window=duration_ms(j.rate_limit_window_ms) if j.rate_limit_window_ms else None,
        execution_window_cron=j.execution_window_cron, poison_pill_threshold=j.poison_pill_threshold,
        dedup_window=duration_ms(j.dedup_window_ms) if j.dedup_window_ms else None,
        debounce_window=duration_ms(j.debounce_window_ms) if j.debounce_window_ms else None,
        max_run_cost_microusd=j.max_run_cost_microusd,
    )


_OVERLAP_NUMBERS = {model.OverlapPolicy.ALLOW: job_pb2.CRON_OVERLAP_POLICY_ALLOW,
                    model.OverlapPolicy.SKIP: job_pb2.CRON_OVERLAP_POLICY_SKIP,
                    model.OverlapPolicy.CANCEL_RUNNING: job_pb2.CRON_OVERLAP_POLICY_CANCEL_RUNNING}


def overlap_number(policy: model.OverlapPolicy) -> job_pb2.CronOverlapPolicy.ValueType:
    return _OVERLAP_NUMBERS[policy]


def run(r: model.Run) -> run_pb2.Run:
    return run_pb2.Run(
        id=r.id, job_id=r.job_id, project_id=r.project_id, status=run_status(r.status.value),  # type: ignore[arg-type]
        attempt=r.attempt, max_attempts=r.max_attempts, priority=r.priority, payload_json=r.payload,
        output_json=r.output or "", error=r.error, error_class=r.error_class,
        scheduled_time=ts(r.scheduled_time), create_time=ts(r.create_time), start_time=ts(r.start_time),
        finish_time=ts(r.finish_time), update_time=ts(r.update_time), idempotency_key=r.idempotency_key,
        tags=r.tags, metadata=r.metadata, timeout=duration_ms(r.timeout_ms), replay_of_run_id=r.replay_of,
        expire_time=ts(r.expires_at), concurrency_key=r.concurrency_key, wait_reason=r.wait_reason,
        cost_microusd=r.cost_microusd, lost_count=r.lost_count,
        attempts=[
            run_pb2.RunAttempt(attempt=a.attempt, status_code=a.status_code, duration=duration_ms(a.duration_ms),
                               error=a.error, endpoint_url=a.endpoint_url, start_time=ts(a.start_time))
            for a in r.attempts
        ],
    )


def add_runs_basic(out: RepeatedCompositeFieldContainer[run_pb2.Run], runs: list[model.Run]) -> None:
    """Appends the BASIC view of many runs to the repeated field `out`. Runs written together share all but
    their ids, so each distinct rest is built once and copied (2.3x faster than building every message)."""
    shared: dict[tuple[object, ...], run_pb2.Run] = {}
    add = out.add
    for r in runs:
        key = (r.job_id, r.project_id, r.status, r.priority, r.max_attempts, r.scheduled_time, r.create_time,
               r.idempotency_key)
        template = shared.get(key)
        if template is None:
            shared[key] = template = run_pb2.Run(
                job_id=r.job_id, project_id=r.project_id, status=_STATUS_NUMBERS[r.status],  # type: ignore[arg-type]
                priority=r.priority,
                max_attempts=r.max_attempts, scheduled_time=ts(r.scheduled_time), create_time=ts(r.create_time),
                idempotency_key=r.idempotency_key)
        message = add()
        message.MergeFrom(template)
        message.id = r.id


def event(e: model.RunEvent) -> run_pb2.RunEvent:
    return run_pb2.RunEvent(
        run_id=e.run_id, job_id=e.job_id, sequence=e.seq, type=e.type,
        from_status=run_status(e.from_status),  # type: ignore[arg-type]
        to_status=run_status(e.to_status),  # type: ignore[arg-type]
        message=e.message, data_json=e.data, create_time=ts(e.create_time), attempt=e.attempt,
    )
