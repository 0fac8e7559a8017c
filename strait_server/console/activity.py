"""What a project's runs say for the overview: the runs created in each 5-minute bucket of the last hour by how
they ended, how long they waited from due to their first start, and how long their attempts took; and the
unfinished runs of each job. Computed from runs the API lists, which the caller bounds: figures over a capped
listing are lower bounds, and buckets the listing did not reach are marked as not counted."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from strait_client._enums import RunStatus
from strait_client._models import Run

BUCKET = timedelta(minutes=5)
BUCKETS = 12  # one hour
FAILED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED, RunStatus.SYSTEM_FAILED,
                    RunStatus.DEAD_LETTER})
ENDED_OTHERWISE = frozenset({RunStatus.CANCELED, RunStatus.EXPIRED})


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0..1) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Bucket:
    """The runs created in [start, start + BUCKET). `counted` is False when the listing stopped before it had
    read all of them (its figures are then lower bounds)."""

    start: datetime
    completed: int = 0
    failed: int = 0
    ended_otherwise: int = 0
    unfinished: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    waits: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    counted: bool = True

    @property
    def created(self) -> int:
        return self.completed + self.failed + self.ended_otherwise + self.unfinished

    def wait(self, q: float) -> float | None:
        return percentile(self.waits, q)

    def duration(self, q: float) -> float | None:
        return percentile(self.durations, q)

    def add(self, run: Run) -> None:
        if run.status == RunStatus.COMPLETED:
            self.completed += 1
        elif run.status in FAILED:
            self.failed += 1
        elif run.status in ENDED_OTHERWISE:
            self.ended_otherwise += 1
        else:
            self.unfinished += 1
        waited = wait_to_start(run)
        if waited is not None:
            self.waits.append(waited)
        for attempt in run.attempts:
            self.attempts += 1
            self.failed_attempts += bool(attempt.error)
            if attempt.duration is not None:
                self.durations.append(attempt.duration.total_seconds())


@dataclass
class Activity:
    """The last hour's buckets, oldest first; `capped`: the listing stopped before the hour's oldest run."""

    buckets: list[Bucket]
    capped: bool

    @property
    def total(self) -> Bucket:
        whole = Bucket(self.buckets[0].start, counted=not self.capped)
        for b in self.buckets:
            whole.completed += b.completed
            whole.failed += b.failed
            whole.ended_otherwise += b.ended_otherwise
            whole.unfinished += b.unfinished
            whole.attempts += b.attempts
            whole.failed_attempts += b.failed_attempts
            whole.waits += b.waits
            whole.durations += b.durations
        return whole


def window_start(now: datetime) -> datetime:
    """The start of the hour the overview shows: BUCKETS buckets on 5-minute boundaries, the last one now's."""
    minutes = now.minute - now.minute % 5
    return now.replace(minute=minutes, second=0, microsecond=0) - BUCKET * (BUCKETS - 1)


def wait_to_start(run: Run) -> float | None:
    """Seconds from when the run was due (created, or its later scheduled time) to its first attempt's start."""
    first = run.attempts[0].start_time if run.attempts else (run.start_time if run.attempt == 1 else None)
    if first is None or run.create_time is None:
        return None
    due = run.create_time
    if run.scheduled_time is not None and due < run.scheduled_time <= first:
        due = run.scheduled_time
    return max(0.0, (first - due).total_seconds())


def activity(runs: Iterable[Run], start: datetime, capped: bool) -> Activity:
    """Buckets the runs (newest first, as listed) created since `start`; `capped`: more were not listed."""
    buckets = [Bucket(start + BUCKET * i) for i in range(BUCKETS)]
    oldest: datetime | None = None
    for run in runs:
        if run.create_time is None or run.create_time < start:
            continue
        index = min(int((run.create_time - start) / BUCKET), BUCKETS - 1)
        buckets[index].add(run)
        oldest = run.create_time if oldest is None else min(oldest, run.create_time)
    if capped:
        for b in buckets:  # runs before the oldest one read, in its bucket and earlier, were not listed
            b.counted = oldest is not None and b.start >= oldest
    return Activity(buckets, capped)


@dataclass(frozen=True, slots=True)
class Depth:
    """A job's unfinished runs; `capped`: the listing stopped, so these are lower bounds."""

    job: str
    queued: int
    delayed: int
    executing: int
    capped: bool

    @property
    def total(self) -> int:
        return self.queued + self.delayed + self.executing


def depth(job: str, runs: Iterable[Run], capped: bool) -> Depth:
    statuses = [r.status for r in runs]
    return Depth(job, statuses.count(RunStatus.QUEUED), statuses.count(RunStatus.DELAYED),
                 statuses.count(RunStatus.EXECUTING), capped)
