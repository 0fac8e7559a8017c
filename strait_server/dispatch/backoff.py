"""Retry delays and the retry/dead-letter decision (reference model §3.5, with the issue's 408 rule)."""

from __future__ import annotations

import random

from strait_server.model import ErrorClass, RunStatus

E = ErrorClass
# Error classes that are worth retrying; everything else goes to dead_letter at once.
RETRYABLE = frozenset({E.RATE_LIMITED, E.REQUEST_TIMEOUT, E.SERVER, E.CONNECTION, E.TIMEOUT, E.UNKNOWN, E.HANDLER})
# Classes for which the fallback endpoint is tried within the same attempt.
TRANSIENT = frozenset({E.RATE_LIMITED, E.CONNECTION, E.TIMEOUT})


def classify_status(code: int) -> ErrorClass:
    if code == 429:
        return E.RATE_LIMITED
    if code == 408:
        return E.REQUEST_TIMEOUT
    if code in (401, 403):
        return E.AUTH
    if 400 <= code < 500:
        return E.CLIENT
    if code >= 500:
        return E.SERVER
    return E.UNKNOWN


# The retry delay is the base delay times a uniform factor in this range, so that runs that failed together
# (an endpoint outage) do not come back together.
JITTER = (0.8, 1.2)


def retry_delay_ms(strategy: str, initial_ms: int, max_ms: int, failed_attempt: int,
                   rng: random.Random | None = None) -> int:
    """initial * 2^(attempt-1) capped at max (or initial when fixed), then ±20% uniform jitter."""
    if strategy == "fixed":
        base = float(initial_ms)
    else:
        base = min(initial_ms * 2.0 ** max(failed_attempt - 1, 0), float(max_ms))
    jitter = (rng or random).uniform(*JITTER)
    return max(0, int(base * jitter))


def retry_delay_sql(strategy: str, initial_ms: str, max_ms: str, failed_attempt: str) -> str:
    """retry_delay_ms as an SQL expression over columns, for statements that reschedule many runs at once
    (RECOVER): the same rule with the same jitter, kept next to it (tests/integration/test_backoff.py
    checks that the two agree)."""
    low, high = JITTER
    return (f"floor(CASE WHEN {strategy} = 'fixed' THEN {initial_ms}::float8 "
            f"ELSE least({initial_ms} * power(2, greatest({failed_attempt} - 1, 0)), {max_ms}::float8) END "
            f"* ({low} + random() * {high - low:.1f}))::bigint")


def next_status(error_class: str, attempt: int, max_attempts: int) -> RunStatus:
    """Where a failed attempt goes: back to the queue, timed_out, or dead_letter."""
    if error_class in RETRYABLE and attempt < max_attempts:
        return RunStatus.QUEUED
    if error_class == E.TIMEOUT:
        return RunStatus.TIMED_OUT
    return RunStatus.DEAD_LETTER
