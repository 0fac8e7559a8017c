"""The client's retry rule: which errors, how long, and never past the call's deadline."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from strait_client import InvalidArgumentError, RetryPolicy, UnavailableError

POLICY = RetryPolicy(max_attempts=3, initial_backoff=timedelta(milliseconds=100),
                     max_backoff=timedelta(milliseconds=300))


def unavailable(retry_after: float | None = None) -> UnavailableError:
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="down")
    if retry_after is not None:
        delay = Duration()
        delay.FromTimedelta(timedelta(seconds=retry_after))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return UnavailableError(grpc.StatusCode.UNAVAILABLE, "down", status)


def test_backoff_grows_with_jitter_up_to_the_attempt_limit() -> None:
    for attempt in (1, 2):
        waits = [POLICY.delay(attempt, unavailable(), remaining=10) for _ in range(50)]
        assert all(w is not None and 0 <= w <= 0.1 * 2 ** (attempt - 1) for w in waits)
        assert len(set(waits)) > 1  # jittered: callers that failed together do not retry together
    assert POLICY.delay(3, unavailable(), remaining=10) is None


def test_the_servers_retry_info_is_followed_within_the_cap() -> None:
    assert POLICY.delay(1, unavailable(0.25), remaining=10) == 0.25
    assert POLICY.delay(1, unavailable(5), remaining=10) == 0.3


def test_no_retry_past_the_deadline_or_for_other_errors() -> None:
    assert POLICY.delay(1, unavailable(0.25), remaining=0.2) is None
    bad = InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, "no", None)
    assert POLICY.delay(1, bad, remaining=10) is None


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=timedelta(seconds=3), max_backoff=timedelta(seconds=1))
