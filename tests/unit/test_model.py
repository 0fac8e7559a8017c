from __future__ import annotations

import random

import pytest

from strait_server.dispatch.backoff import classify_status, next_status, retry_delay_ms
from strait_server.model import CANCELABLE, TERMINAL, TRANSITIONS, RunStatus


def test_terminal_states_have_no_way_out_except_dead_letter_replay() -> None:
    for status in TERMINAL - {RunStatus.DEAD_LETTER}:
        assert status not in TRANSITIONS
    assert TRANSITIONS[RunStatus.DEAD_LETTER] == {RunStatus.QUEUED, RunStatus.REPLAY_STAGED}


def test_cancelable_statuses_are_exactly_the_non_terminal_ones_that_may_cancel() -> None:
    assert set(CANCELABLE) == {"delayed", "queued", "dequeued", "executing", "waiting", "replay_staged", "paused"}
    assert not set(CANCELABLE) & {s.value for s in TERMINAL}


def test_exponential_backoff_doubles_with_jitter_and_caps() -> None:
    rng = random.Random(7)
    for attempt, base in [(1, 1000), (2, 2000), (3, 4000), (10, 60_000)]:
        delay = retry_delay_ms("exponential", 1000, 60_000, attempt, rng)
        assert base * 0.8 <= delay <= base * 1.2
    assert 400 <= retry_delay_ms("fixed", 500, 60_000, 9, rng) <= 600


@pytest.mark.parametrize(("code", "klass"), [
    (429, "rate_limited"), (408, "request_timeout"), (401, "auth"), (403, "auth"), (404, "client"),
    (500, "server"), (503, "server"), (302, "unknown"),
])
def test_status_classes(code: int, klass: str) -> None:
    assert classify_status(code) == klass


def test_retry_decision() -> None:
    assert next_status("server", 1, 3) is RunStatus.QUEUED
    assert next_status("server", 3, 3) is RunStatus.DEAD_LETTER
    assert next_status("client", 1, 3) is RunStatus.DEAD_LETTER
    assert next_status("auth", 1, 3) is RunStatus.DEAD_LETTER
    assert next_status("timeout", 2, 3) is RunStatus.QUEUED
    assert next_status("timeout", 3, 3) is RunStatus.TIMED_OUT
    assert next_status("request_timeout", 3, 3) is RunStatus.DEAD_LETTER


def test_ids_are_prefixed_unique_and_sort_by_creation_time() -> None:
    import time

    from strait_server import ids

    first = ids.new_ids("run", 500)
    made_at = int(time.time() * 1000)
    while int(time.time() * 1000) <= made_at:  # wait for the next millisecond (at most one)
        pass
    later = ids.new_id("run")
    assert len(set(first)) == 500
    assert all(i.startswith("run_") and len(i) == 28 for i in [*first, later])
    assert max(first) < later


def test_ids_are_crockford_base32_of_the_stamp_and_the_noise() -> None:
    """The encoding matches the standard base32 of the 15 bytes (stamp, then noise), in Crockford's digits."""
    import base64
    import os

    from strait_server import ids

    crockford = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ids.ALPHABET.encode())
    for stamp_ms in (0, 1, 2**48 - 1, 1_796_130_000_123):
        noise = os.urandom(9 * 50)
        expected = [
            "run_" + base64.b32encode(stamp_ms.to_bytes(6, "big") + noise[i:i + 9]).translate(crockford).decode()
            for i in range(0, len(noise), 9)]
        assert ids.encode("run", stamp_ms, noise) == expected
