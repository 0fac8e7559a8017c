"""Changing a job's definition, and what must follow the commit: waking dispatchers whose runs became
claimable or due, and re-gating queued runs that a concurrent trigger queued under the old flow control."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from strait_server.faults import DATABASE_ERRORS
from strait_server.model import Job, JobSpec
from strait_server.store.jobs import JobStore, regates

log = logging.getLogger(__name__)

# A trigger statement takes milliseconds; this leaves it ample time to commit.
REGATE_AGAIN_AFTER_S = 2.0


class JobUpdates:
    def __init__(self, jobs: JobStore, *, on_enqueued: Callable[[], None], on_delayed: Callable[[], None]) -> None:
        self._jobs = jobs
        self._on_enqueued = on_enqueued
        self._on_delayed = on_delayed
        self._later: set[asyncio.Future[None]] = set()  # pending re-gates, kept from the collector

    async def update(self, current: Job, spec: JobSpec, *, etag: str) -> Job:
        updated = await self._jobs.update(current, spec, etag=etag)
        if updated.enabled and not current.enabled:
            self._on_enqueued()  # its queued runs are claimable again
        if updated.execution_window_cron != current.execution_window_cron:
            self._on_delayed()  # runs that waited for the old window are due now
        if regates(current, spec):
            self._regate_again(updated.id)
        return updated

    def _regate_again(self, job_id: str) -> None:
        """The update re-gated the job's queued runs, but a trigger that read the job before the update
        committed may queue a run under the old gating just after: look again once such triggers are over."""
        async def later() -> None:
            await asyncio.sleep(REGATE_AGAIN_AFTER_S)
            try:
                await self._jobs.regate(job_id)
            except DATABASE_ERRORS as exc:
                log.warning("re-gating the queued runs of %s failed: %s", job_id, exc,
                            extra={"action": "regate_error", "job_id": job_id})
        task = asyncio.ensure_future(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)
