"""What holds an unfinished run back: the message of `runs.wait`'s TimeoutError.

The server says why a due run is not starting in `Run.wait_reason` (a flow-control limit, an execution
window, its endpoint's open circuit); the rest follows from the run and its job.
"""

from __future__ import annotations

from strait_client._enums import ExecutionMode, RunStatus
from strait_client._models import Job, Run


def needs_job(run: Run) -> bool:
    """Whether the run's job tells more (a queued run without a reason: disabled job, worker queue)."""
    return run.status is RunStatus.QUEUED and not run.wait_reason


def timeout_message(timed_out: str, run: Run, job: Job | None) -> str:
    """`timed_out` (what the watch said), then what the run is doing and why, e.g. "still queued: endpoint
    circuit open: not attempted, next try at ...".
    """
    status = run.status.value if run.status is not None else "unfinished"
    reason = _reason(run, job)
    return f"{timed_out}; still {status}" + (f": {reason}" if reason else "")


def _reason(run: Run, job: Job | None) -> str:
    if run.wait_reason:
        return run.wait_reason
    if run.status is RunStatus.QUEUED:
        return _queued(run, job)
    if run.status is RunStatus.DELAYED and run.scheduled_time is not None:
        due = run.scheduled_time.isoformat()
        if run.metadata.get("triggered_by") == "debounce":
            return f"debounced, due at {due} unless triggered again before"
        return f"scheduled for {due}"
    if run.status is RunStatus.EXECUTING:
        since = f" since {run.start_time.isoformat()}" if run.start_time is not None else ""
        limit = f" (timeout {run.timeout.total_seconds():g}s)" if run.timeout is not None else ""
        return f"attempt {run.attempt} of {run.max_attempts} running{since}{limit}"
    return ""


def _queued(run: Run, job: Job | None) -> str:
    if job is not None and not job.enabled:
        return f"its job {job.slug!r} is disabled; the run starts once the job is enabled"
    if run.attempt > 0 and run.error:
        return f"attempt {run.attempt} failed ({run.error}); the next one waits for its backoff"
    if job is not None and job.execution_mode is ExecutionMode.WORKER:
        return f"waiting for a worker of queue {job.queue!r} with a free slot"
    return "waiting for a free dispatcher slot (a server running the worker role claims it)"
