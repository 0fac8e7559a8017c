"""The overview's arithmetic on its own: which bucket a run counts in, how long it waited, what a capped
listing marks as not all counted, and the charts' bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client._models import Run
from strait_client.v1 import run_pb2
from strait_server.console import activity, charts

NOW = datetime(2026, 3, 2, 10, 17, 30, tzinfo=UTC)


def ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def run(created: datetime, status: run_pb2.RunStatus.ValueType = run_pb2.RUN_STATUS_COMPLETED,
        started: datetime | None = None, scheduled: datetime | None = None,
        attempts: tuple[tuple[float, str], ...] = ()) -> Run:
    m = run_pb2.Run(id="run_x", status=status, create_time=ts(created), attempt=len(attempts))
    if scheduled is not None:
        m.scheduled_time.CopyFrom(ts(scheduled))
    for number, (seconds, error) in enumerate(attempts, 1):
        m.attempts.append(run_pb2.RunAttempt(attempt=number, error=error, duration=Duration(
            nanos=int(seconds * 1e9)), start_time=ts((started or created) + timedelta(seconds=number - 1))))
    return Run.from_proto(m)


def test_the_hour_is_twelve_buckets_on_five_minute_boundaries_ending_with_now() -> None:
    start = activity.window_start(NOW)
    assert start == datetime(2026, 3, 2, 9, 20, tzinfo=UTC)
    hour = activity.activity([], start, capped=False)
    assert [b.start.strftime("%H:%M") for b in hour.buckets][-2:] == ["10:10", "10:15"] and len(hour.buckets) == 12


def test_runs_count_by_creation_bucket_and_how_they_ended() -> None:
    start = activity.window_start(NOW)
    hour = activity.activity([
        run(NOW - timedelta(seconds=10), attempts=((0.2, ""),)),
        run(NOW - timedelta(minutes=1), run_pb2.RUN_STATUS_DEAD_LETTER, attempts=((0.1, "503"), (0.3, "503"))),
        run(NOW - timedelta(minutes=2), run_pb2.RUN_STATUS_QUEUED),
        run(NOW - timedelta(minutes=40), run_pb2.RUN_STATUS_CANCELED),
        run(start - timedelta(seconds=1)),  # before the hour: not counted
    ], start, capped=False)
    last, total = hour.buckets[-1], hour.total
    assert (last.completed, last.failed, last.unfinished, last.attempts, last.failed_attempts) == (1, 1, 1, 3, 2)
    assert (total.created, total.ended_otherwise) == (4, 1) and all(b.counted for b in hour.buckets)
    assert total.duration(0.5) == 0.2 and total.duration(0.95) == 0.3


def test_a_run_scheduled_for_later_waits_from_its_due_time() -> None:
    created = NOW - timedelta(minutes=10)
    due = created + timedelta(minutes=5)
    assert activity.wait_to_start(run(created, started=due + timedelta(seconds=2), scheduled=due,
                                      attempts=((0.1, ""),))) == 2.0
    assert activity.wait_to_start(run(created, started=created + timedelta(seconds=3),
                                      attempts=((0.1, ""),))) == 3.0
    assert activity.wait_to_start(run(created, run_pb2.RUN_STATUS_QUEUED)) is None  # not started


def test_a_capped_listing_marks_the_buckets_it_did_not_reach() -> None:
    start = activity.window_start(NOW)
    newest = [run(NOW - timedelta(minutes=m)) for m in (1, 3, 7)]  # reached back to 10:10:30
    hour = activity.activity(newest, start, capped=True)
    assert [b.counted for b in hour.buckets][-3:] == [False, False, True] and not hour.total.counted


def test_charts_scale_bars_to_the_largest_and_stack_their_parts() -> None:
    chart = charts.columns("runs", ["a", "b"], [(2, 2), (1, 0)], ("ok", "bad"), ("done", "failed"), str)
    tall, short = chart.bars
    assert [s.tone for s in tall.segments] == ["ok", "bad"] and short.segments[0].height * 2 == tall.segments[0].height
    assert tall.title == "a: done 2, failed 2" and short.title == "b: done 1" and chart.top == "4"
    rows = charts.rows("depth", ["a-very-long-job-slug-that-goes-on"], [(5, 5)], ("idle", "busy"), ("q", "e"), str,
                       totals=["at least 10"])
    assert rows.bars[0].label.endswith("…") and rows.bars[0].value == "at least 10"
