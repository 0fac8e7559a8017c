"""The budget of request bytes handled at once, per server and per caller."""

from __future__ import annotations

import pytest

from strait_server.api.inflight import SMALL_BYTES, InFlightBytes
from strait_server.errors import ResourceExhausted

MB = 1024 * 1024


def test_a_caller_over_its_budget_is_refused_and_others_are_not() -> None:
    budget = InFlightBytes(server_max=20 * MB, caller_max=10 * MB)
    with budget.hold("a", 6 * MB):
        with pytest.raises(ResourceExhausted) as refused:
            with budget.hold("a", 6 * MB):
                pass
        assert refused.value.retry_after_seconds == 1.0 and refused.value.quota_subject == "a"
        with budget.hold("b", 6 * MB):
            # The server's budget: 12 MB held, 12 more would pass 20.
            with pytest.raises(ResourceExhausted) as full:
                with budget.hold("c", 9 * MB):
                    pass
            assert full.value.quota_subject == "server"
    assert budget.total == 0
    with budget.hold("a", 10 * MB):  # all released: the whole budget again
        pass


def test_small_requests_are_not_counted() -> None:
    budget = InFlightBytes(server_max=SMALL_BYTES, caller_max=SMALL_BYTES)
    with budget.hold("a", SMALL_BYTES - 1), budget.hold("a", SMALL_BYTES - 1):
        assert budget.total == 0


def test_bytes_are_released_when_the_handler_fails() -> None:
    budget = InFlightBytes(server_max=10 * MB, caller_max=10 * MB)
    with pytest.raises(ValueError), budget.hold("a", 8 * MB):
        raise ValueError("handler failed")
    assert budget.total == 0
