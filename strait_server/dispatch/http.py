"""HTTP executor: POST the payload to the job's endpoint and turn the answer into an Outcome."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from strait_server import auth
from strait_server.dispatch.backoff import TRANSIENT, classify_status, next_status, retry_delay_ms
from strait_server.dispatch.transport import EndpointClient
from strait_server.endpoints import Resolver
from strait_server.model import ErrorClass, RunStatus
from strait_server.queue import ClaimedRun, Outcome
from strait_server.telemetry.tracing import inject_headers

_TRACE_KEYS = ("traceparent", "tracestate", "baggage", "sentry-trace")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Attempt:
    status_code: int
    error: str
    error_class: str
    output: str | None
    endpoint_url: str


class HttpExecutor:
    def __init__(self, *, allow_private: bool, jwt_key: str, max_output_bytes: int,
                 token_margin_s: float) -> None:
        self._allow_private = allow_private
        self._tokens = auth.RunTokenSigner(jwt_key)
        self._max_output = max_output_bytes
        self._token_margin = token_margin_s
        self._client: EndpointClient | None = None

    async def start(self) -> None:
        self._client = EndpointClient(Resolver(allow_private=self._allow_private))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _headers(self, run: ClaimedRun, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "strait",
            "X-Run-ID": run.id,
            "X-Job-ID": run.job_id,
            "X-Attempt": str(run.attempt),
            "X-Run-Token": self._tokens.issue(run.id, run.attempt, run.timeout_ms / 1000 + self._token_margin),
        }
        if run.signing_secret:
            ts = int(time.time())
            headers["X-Strait-Timestamp"] = str(ts)
            headers["X-Strait-Signature"] = auth.sign_body(run.signing_secret, ts, body)
        if run.checkpoint is not None and len(run.checkpoint) <= 4096:
            headers["X-Last-Checkpoint"] = _CONTROL.sub(" ", run.checkpoint)
        if run.attempt > 1 and run.previous_error:
            headers["X-Previous-Error"] = _CONTROL.sub(" ", run.previous_error[:1024])
        for key in _TRACE_KEYS:
            if key in run.metadata:
                headers[key] = run.metadata[key]
        inject_headers(headers)  # with tracing on: the dispatch span's traceparent
        return headers

    async def _post(self, url: str, body: bytes, headers: dict[str, str], budget_s: float) -> Attempt:
        assert self._client is not None
        try:
            resp = await self._client.post(url, body, headers, budget_s=max(budget_s, 0.001),
                                           max_body=self._max_output)
        except TimeoutError:
            return Attempt(0, f"endpoint timed out after {budget_s:.3g}s", ErrorClass.TIMEOUT, None, url)
        except OSError as exc:
            return Attempt(0, f"connection error: {type(exc).__name__}: {exc}"[:1024], ErrorClass.CONNECTION, None,
                           url)
        except ValueError as exc:  # a request that cannot be sent (e.g. a malformed URL or header)
            return Attempt(0, f"invalid request: {exc}"[:1024], ErrorClass.INVALID_REQUEST, None, url)
        if 200 <= resp.status < 300:
            return Attempt(resp.status, "", "", self._output(resp.body), url)
        return Attempt(resp.status, f"endpoint returned {resp.status}", classify_status(resp.status), None, url)

    def _output(self, raw: bytes) -> str | None:
        if not raw:
            return None
        if len(raw) > self._max_output:
            return json.dumps({"truncated": True, "limit_bytes": self._max_output})
        text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        try:
            json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than we parse: kept as a JSON string
            return json.dumps(text)
        return text

    async def execute(self, run: ClaimedRun) -> Outcome:
        """One attempt: POST to the primary (and the fallback for transient failures) within the deadline."""
        body = run.payload.encode()
        headers = self._headers(run, body)
        started = time.monotonic()
        start_time = datetime.now(UTC)
        deadline = started + run.timeout_ms / 1000
        result = await self._post(run.endpoint_url, body, headers, deadline - time.monotonic())
        if result.error_class in TRANSIENT and run.fallback_endpoint_url:
            remaining = deadline - time.monotonic()
            if remaining > 0.01:
                result = await self._post(run.fallback_endpoint_url, body, headers, remaining)
        return outcome_of(run, result, start_time, (time.monotonic() - started) * 1000)


def outcome_of(run: ClaimedRun, result: Attempt, start_time: datetime, duration_ms: float) -> Outcome:
    """Completed, back to the queue after a backoff, timed_out or dead_letter."""
    record = {"attempt": run.attempt, "status_code": result.status_code, "duration_ms": round(duration_ms, 3),
              "error": result.error, "endpoint_url": result.endpoint_url, "start_time": start_time.isoformat()}
    if not result.error_class and result.status_code == 202:
        # Accepted for asynchronous completion: the run's code reports Complete/Fail through RunContextService.
        return Outcome(run_id=run.id, attempt=run.attempt, to_status=RunStatus.EXECUTING, output=None,
                       error="", error_class="", delay_ms=0, record=record)
    if not result.error_class:
        return Outcome(run_id=run.id, attempt=run.attempt, to_status=RunStatus.COMPLETED,
                       output=result.output, error="", error_class="", delay_ms=0, record=record)
    status = next_status(result.error_class, run.attempt, run.max_attempts)
    error = result.error
    delay = 0
    if status is RunStatus.QUEUED:
        repeats = same_failure_streak(run.previous_failures, f"{result.status_code} {result.error}")
        if run.poison_pill_threshold and repeats >= run.poison_pill_threshold:
            # Retrying what failed identically N times in a row only hammers the endpoint: park it now.
            status = RunStatus.DEAD_LETTER
            error = f"poison pill detected (same error {repeats} times in a row): {result.error}"
        else:
            delay = retry_delay_ms(run.retry_strategy, run.retry_initial_ms, run.retry_max_ms, run.attempt)
    return Outcome(run_id=run.id, attempt=run.attempt, to_status=status, output=None,
                   error=error, error_class=result.error_class, delay_ms=delay, record=record)


def same_failure_streak(previous: tuple[str, ...], latest: str) -> int:
    """How many attempts in a row, ending with this one, failed with exactly `latest`."""
    streak = 1
    for failure in reversed(previous):
        if failure != latest:
            break
        streak += 1
    return streak


def failed_outcome(run: ClaimedRun, error: str) -> Outcome:
    return outcome_of(run, Attempt(0, error, ErrorClass.UNKNOWN, None, run.endpoint_url), datetime.now(UTC), 0.0)

