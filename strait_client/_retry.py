"""When and how long to wait before retrying a call: one rule for Client and AsyncClient."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta

from strait_client._errors import StraitError, UnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls answered UNAVAILABLE (server restarting, database outage), for calls safe to repeat:
    reads, triggers, which carry a request id the server recognises on a retry, and events sent with an
    idempotency key.

    Args:
        max_attempts: Attempts in all, the first included (1 turns retries off).
        initial_backoff: The wait before the first retry when the server gives none; doubled per retry.
        max_backoff: The longest wait between two attempts.

    Every attempt shares the call's timeout: retries never make a call outlast it.
    """

    max_attempts: int = 4
    initial_backoff: timedelta = timedelta(milliseconds=200)
    max_backoff: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff <= timedelta(0) or self.max_backoff < self.initial_backoff:
            raise ValueError("backoffs must be positive, max_backoff at least initial_backoff")

    def delay(self, attempt: int, error: StraitError, remaining: float) -> float | None:
        """How long to wait before the next attempt of a call.

        Args:
            attempt: The attempt that failed (1 for the first).
            error: What it failed with; only UnavailableError is retried.
            remaining: Seconds left of the call's timeout.

        Returns:
            Seconds to wait before attempt `attempt + 1`, or None to give up (not retryable, attempts used up,
            or the wait would outlast the timeout).
        """
        if not isinstance(error, UnavailableError) or attempt >= self.max_attempts:
            return None
        cap = min(self.initial_backoff.total_seconds() * 2 ** (attempt - 1), self.max_backoff.total_seconds())
        # The server's RetryInfo when it gives one, else "full jitter": callers that failed together spread out.
        wait = error.retry_delay if error.retry_delay is not None else random.uniform(0, cap)
        wait = min(wait, self.max_backoff.total_seconds())
        return wait if wait < remaining else None


# An attempt never starts with less of the deadline left than this.
MIN_ATTEMPT_TIMEOUT = 0.001


class Attempts:
    """The attempts of one call: each one's timeout (what is left of the call's), and the wait before the next."""

    def __init__(self, policy: RetryPolicy, timeout: float, retryable: bool) -> None:
        self._policy = policy
        self._deadline = time.monotonic() + timeout
        self._retryable = retryable
        self._attempt = 1

    def timeout(self) -> float:
        return max(self._deadline - time.monotonic(), MIN_ATTEMPT_TIMEOUT)

    def wait_after(self, error: StraitError) -> float | None:
        """Seconds to wait before the next attempt after `error`, or None when the call fails with it."""
        if not self._retryable:
            return None
        wait = self._policy.delay(self._attempt, error, self._deadline - time.monotonic())
        self._attempt += 1
        return wait
