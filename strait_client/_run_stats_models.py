"""What `runs.stats` returns (strait.v1.GetRunStatsResponse; see _models for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from strait_client._models import duration_of, time_of
from strait_client.v1 import run_pb2


@dataclass(frozen=True, slots=True)
class DurationPercentiles:
    """Nearest-rank percentiles of `count` measured spans (each one of the measured values); `p50` and `p95`
    are None when nothing was measured."""

    count: int
    p50: timedelta | None
    p95: timedelta | None

    @classmethod
    def from_proto(cls, m: run_pb2.DurationPercentiles) -> DurationPercentiles:
        """Decodes a strait.v1.DurationPercentiles message.

        Args:
            m: The message.

        Returns:
            The percentiles.
        """
        return cls(m.count, duration_of(m, "p50"), duration_of(m, "p95"))


@dataclass(frozen=True, slots=True)
class RunStatsBucket:
    """The runs of one time bucket from `start_time` (or of the whole window, in RunStats.totals): how many were
    created in it, how many finished in it by final status (`failed` counts failed, dead_letter, timed_out,
    crashed and system_failed), and over those that finished, the `wait` from when each was due to its first
    start and the `duration` of its last attempt (canceled and expired runs left out)."""

    start_time: datetime | None
    created: int
    completed: int
    failed: int
    canceled: int
    expired: int
    wait: DurationPercentiles
    duration: DurationPercentiles

    @classmethod
    def from_proto(cls, m: run_pb2.RunStatsBucket) -> RunStatsBucket:
        """Decodes a strait.v1.RunStatsBucket message.

        Args:
            m: The message.

        Returns:
            The bucket.
        """
        return cls(time_of(m, "start_time"), m.created, m.completed, m.failed, m.canceled, m.expired,
                   DurationPercentiles.from_proto(m.wait), DurationPercentiles.from_proto(m.duration))

    @property
    def finished(self) -> int:
        """The runs that reached a final status in the bucket."""
        return self.completed + self.failed + self.canceled + self.expired


@dataclass(frozen=True, slots=True)
class JobRunQueue:
    """A job's unfinished runs now: `queued` (due, waiting to be claimed), `delayed` (waiting for a later
    time: scheduled, backing off before a retry, or held by an open circuit or a closed execution window) and
    `executing`."""

    job_id: str
    job_slug: str
    queued: int
    delayed: int
    executing: int

    @classmethod
    def from_proto(cls, m: run_pb2.JobRunQueue) -> JobRunQueue:
        """Decodes a strait.v1.JobRunQueue message.

        Args:
            m: The message.

        Returns:
            The job's counts.
        """
        return cls(m.job_id, m.job_slug, m.queued, m.delayed, m.executing)

    @property
    def total(self) -> int:
        return self.queued + self.delayed + self.executing


@dataclass(frozen=True, slots=True)
class RunStats:
    """The project's (or one job's) runs from `start_time` to `end_time` in buckets of `bucket`, oldest first,
    with `totals` over the whole window; and `queues`, the unfinished runs of every job that has any, most
    first."""

    start_time: datetime | None
    end_time: datetime | None
    bucket: timedelta | None
    buckets: tuple[RunStatsBucket, ...]
    totals: RunStatsBucket
    queues: tuple[JobRunQueue, ...]

    @classmethod
    def from_proto(cls, m: run_pb2.GetRunStatsResponse) -> RunStats:
        """Decodes a strait.v1.GetRunStatsResponse message.

        Args:
            m: The message.

        Returns:
            The statistics.
        """
        return cls(time_of(m, "start_time"), time_of(m, "end_time"), duration_of(m, "bucket"),
                   tuple(RunStatsBucket.from_proto(b) for b in m.buckets), RunStatsBucket.from_proto(m.totals),
                   tuple(JobRunQueue.from_proto(q) for q in m.queues))
