"""GetRunStats's request and reply: the window and bucket width checked, the statistics as messages."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from strait_client.v1 import run_pb2
from strait_server.api import convert
from strait_server.errors import Violations
from strait_server.store.run_stats import BucketStats, Percentiles, RunStats

DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_BUCKET = timedelta(minutes=5)
SHORTEST = timedelta(minutes=1)  # of a bucket, and so of a window
LONGEST = timedelta(hours=24)
MOST_BUCKETS = 288  # 24 hours of 5 minutes


def _text(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"


def _span(v: Violations, path: str, d: Duration | None, default: timedelta) -> timedelta:
    """A window or bucket width between SHORTEST and LONGEST; `default` when unset (or refused)."""
    if d is None:
        return default
    whole = 0 <= d.seconds <= LONGEST.total_seconds() and 0 <= d.nanos <= 999_999_999  # else no timedelta
    span = timedelta(seconds=d.seconds, microseconds=d.nanos // 1000) if whole else None
    if span is None or not SHORTEST <= span <= LONGEST:
        v.add(path, f"must be between {_text(SHORTEST)} and {_text(LONGEST)}")
        return default
    return span


def spans(v: Violations, request: run_pb2.GetRunStatsRequest) -> tuple[timedelta, timedelta]:
    """The request's window and bucket width (defaults for unset ones), with a violation for each wrong one."""
    window = _span(v, "window", request.window if request.HasField("window") else None, DEFAULT_WINDOW)
    bucket = _span(v, "bucket", request.bucket if request.HasField("bucket") else None, min(window, DEFAULT_BUCKET))
    if v.items:
        return window, bucket
    if bucket > window:
        v.add("bucket", f"must not be longer than the window ({_text(window)})")
    elif -(-window // bucket) > MOST_BUCKETS:
        v.add("bucket", f"must divide the window into at most {MOST_BUCKETS} buckets: at least "
                        f"{_text(-(-window // MOST_BUCKETS))} for a window of {_text(window)}")
    return window, bucket


def _percentiles(p: Percentiles) -> run_pb2.DurationPercentiles:
    out = run_pb2.DurationPercentiles(count=p.count)
    if p.p50 is not None and p.p95 is not None:
        out.p50.FromTimedelta(p.p50)
        out.p95.FromTimedelta(p.p95)
    return out


def _bucket(b: BucketStats) -> run_pb2.RunStatsBucket:
    return run_pb2.RunStatsBucket(start_time=convert.ts(b.start), created=b.created, completed=b.completed,
                                  failed=b.failed, canceled=b.canceled, expired=b.expired,
                                  wait=_percentiles(b.wait), duration=_percentiles(b.duration))


def reply(stats: RunStats) -> run_pb2.GetRunStatsResponse:
    out = run_pb2.GetRunStatsResponse(
        start_time=convert.ts(stats.window.start), end_time=convert.ts(stats.window.end),
        buckets=[_bucket(b) for b in stats.buckets], totals=_bucket(stats.totals),
        queues=[run_pb2.JobRunQueue(job_id=q.job_id, job_slug=q.job_slug, queued=q.queued, delayed=q.delayed,
                                    executing=q.executing) for q in stats.queues])
    out.bucket.FromTimedelta(stats.window.bucket)
    return out
