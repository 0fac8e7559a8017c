"""RunOptions validation: the batch fast path (orjson, only the fields set) must judge exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from strait_client.v1 import job_pb2
from strait_server.api.validate import job_spec, run_options
from strait_server.errors import Violations
from strait_server.model import NewRun

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _check(options: job_pb2.RunOptions, max_payload: int = 1 << 20) -> tuple[Violations, NewRun]:
    v = Violations()
    return v, run_options(v, "runs[3]", options, max_payload=max_payload, now=NOW)


def _paths(v: Violations) -> list[str]:
    return [f.field for f in v.items]


@pytest.mark.parametrize("payload", [
    "{}", '{"n": 123456789012345678901234567890}', '{"s": "\\ud800"}', '{"a": {"b": [1, 2.5, null, true]}}',
    '  {"pad": 1}\n', '{"x": 1, "x": 2}',
])
def test_json_objects_are_accepted_as_sent(payload: str) -> None:
    v, new = _check(job_pb2.RunOptions(payload_json=payload))
    assert not v.items
    assert new.payload == payload


@pytest.mark.parametrize("payload", [
    "[1]", "1", '"s"', "null", '{"a": NaN}', '{"a": Infinity}', "{", '{"a": 1} x', '{"a": "\\u0000"}',
    '{"a": "\x00"}', "[" * 2000 + "]" * 2000,
])
def test_anything_but_a_json_object_is_refused_on_its_path(payload: str) -> None:
    v, _ = _check(job_pb2.RunOptions(payload_json=payload))
    assert _paths(v) == ["runs[3].payload_json"]


def test_payload_size_counts_utf8_bytes() -> None:
    v, _ = _check(job_pb2.RunOptions(payload_json='{"e": "' + "é" * 60 + '"}'), max_payload=100)
    assert _paths(v) == ["runs[3].payload_json"]
    v, _ = _check(job_pb2.RunOptions(payload_json='{"e": "' + "é" * 40 + '"}'), max_payload=100)
    assert not v.items


def test_every_set_option_is_checked_on_its_own_path() -> None:
    late = Timestamp()
    late.FromDatetime(NOW + timedelta(days=31))
    options = job_pb2.RunOptions(
        payload_json="{}", scheduled_time=late, priority=11, max_attempts=0, timeout=Duration(seconds=-1),
        ttl=Duration(seconds=-1), idempotency_key="k" * 257, concurrency_key="a\x00",
        tags={str(i): "v" for i in range(21)}, metadata={"traceparent": "\n"})
    v, _ = _check(options)
    assert sorted(_paths(v)) == sorted([
        "runs[3].scheduled_time", "runs[3].priority", "runs[3].max_attempts", "runs[3].timeout", "runs[3].ttl",
        "runs[3].idempotency_key", "runs[3].concurrency_key", "runs[3].tags", "runs[3].metadata['traceparent']"])


def test_set_options_reach_the_new_run() -> None:
    at = Timestamp(seconds=int(NOW.timestamp()) + 60, nanos=500_000_000)
    v, new = _check(job_pb2.RunOptions(scheduled_time=at, priority=0, max_attempts=7, timeout=Duration(seconds=2),
                                       concurrency_key="c", tags={"t": "1"}, metadata={"m": "2"}))
    assert not v.items
    assert new.payload == "{}"
    assert new.scheduled_time == NOW + timedelta(seconds=60, milliseconds=500)
    assert (new.priority, new.max_attempts, new.timeout_ms) == (0, 7, 2000)
    assert (new.concurrency_key, new.tags, new.metadata) == ("c", {"t": "1"}, {"m": "2"})


@pytest.mark.parametrize(("seconds", "nanos"), [(253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 10**9)])
def test_out_of_range_timestamps_are_refused(seconds: int, nanos: int) -> None:
    v, _ = _check(job_pb2.RunOptions(scheduled_time=Timestamp(seconds=seconds, nanos=nanos)))
    assert _paths(v) == ["runs[3].scheduled_time"]


@pytest.mark.parametrize(("job", "path"), [
    (job_pb2.Job(slug="noop\n", endpoint_url="https://example.com/run"), "job.slug"),
    (job_pb2.Job(slug="noop", queue="q\n", endpoint_url="https://example.com/run"), "job.queue"),
])
def test_a_trailing_newline_does_not_pass_a_name_pattern(job: job_pb2.Job, path: str) -> None:
    v = Violations()
    job_spec(v, job, allow_private=False)
    assert path in _paths(v)
