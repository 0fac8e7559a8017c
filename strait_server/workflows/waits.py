"""Steps that wait (approval, wait_for_event, sleep): what a step waits for when it starts, whether an event's
payload matches, what its timer does when it fires, and who may decide an approval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from strait_server.workflows import expressions
from strait_server.workflows.plan import StepPlan, StepStatus

MAX_EVENT_KEY_CHARS = 1024


@dataclass(frozen=True)
class WaitStart:
    reason: str  # "approval", "event:<key>", "sleep"
    wake_in_ms: int | None  # the timer, from the start (by the database's clock) ...
    event_key: str | None  # the key an event wait waits for
    wake_time: datetime | None = None  # ... or at a time a template gave


@dataclass(frozen=True)
class Approver:
    """The API key deciding an approval."""

    key_id: str
    key_name: str


def start_of(step: StepPlan, context: dict[str, Any]) -> WaitStart:
    """What the step waits for. Raises expressions.EvaluationError for a template that does not render (an
    event key, a sleep's end)."""
    wait = step.wait
    assert wait is not None
    timer = wait.timeout_ms
    if step.kind == "approval":
        return WaitStart("approval", timer, None)
    if step.kind == "wait_for_event":
        key = _text(expressions.render_text(wait.key_template, context))
        if not key or len(key) > MAX_EVENT_KEY_CHARS:
            raise expressions.EvaluationError(f"the event key must be 1 to {MAX_EVENT_KEY_CHARS} characters")
        return WaitStart(f"event:{key}", timer, key)
    if wait.until_template:
        return WaitStart("sleep", None, None, _time(expressions.render_text(wait.until_template, context)))
    return WaitStart("sleep", timer, None)


def matches(match: str, payload: Any) -> bool:
    """Whether an event's payload satisfies a wait's match (none: any payload). An expression that fails on
    this payload (a missing key, say) does not match."""
    if not match:
        return True
    try:
        return expressions.evaluate(match, {"payload": payload}) is True
    except expressions.EvaluationError:
        return False


def timer_outcome(step: StepPlan) -> tuple[StepStatus, str]:
    """How a waiting step ends when its timer fires: a sleep completes, a wait or an approval times out."""
    if step.kind == "sleep":
        return StepStatus.COMPLETED, ""
    if step.kind == "approval":
        return StepStatus.FAILED, "approval_timed_out: nobody approved or rejected the step in time"
    return StepStatus.FAILED, "event_wait_timed_out: no matching event arrived in time"


def may_decide(step: StepPlan, approver: Approver) -> bool:
    """An approval naming approvers is decided by those keys (by id or name) only; else by any key."""
    assert step.wait is not None
    names = step.wait.approvers
    return not names or approver.key_id in names or approver.key_name in names


def decision_output(approver: Approver, comment: str, now: datetime) -> dict[str, Any]:
    return {"approver": approver.key_name or approver.key_id, "approver_key_id": approver.key_id,
            "comment": comment, "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z")}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise expressions.EvaluationError(f"the sleep's end {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
