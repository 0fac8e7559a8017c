"""Log lines and progress that workers send on their streams: checked as they arrive, written in batches (one
statement per batch, through the run context's store), and answered on the stream once committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from strait_client.v1 import worker_pb2
from strait_server.api import run_reports
from strait_server.errors import FieldViolation, InvalidArgument, Violations
from strait_server.faults import DATABASE_ERRORS
from strait_server.model import EventType
from strait_server.store.run_context import RunContextStore
from strait_server.workers.session import Session

W = worker_pb2
log = logging.getLogger("strait.workers")
MAX_REPORTS = 1000
# A write the database cannot take now is tried again, this long after the first failure, doubling up to 2 s.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0


@dataclass(frozen=True)
class Report:
    report_id: int
    run_id: str
    attempt: int
    type: str
    message: str
    data: dict[str, Any]


def checked(session: Session, batch: worker_pb2.SubmitReports) -> tuple[list[Report], list[W.RejectedReport]]:
    """The reports to write, and those refused at once: about an assignment the session does not hold, or with
    a content RunContextService would refuse. A batch too large or a report without content ends the stream."""
    if len(batch.reports) > MAX_REPORTS:
        raise InvalidArgument([FieldViolation("reports.reports", f"at most {MAX_REPORTS:,} reports per batch")],
                              "too many reports in one batch")
    empty = [FieldViolation(f"reports.reports[{i}]", "needs a log or a progress")
             for i, report in enumerate(batch.reports) if report.WhichOneof("report") is None]
    if empty:
        raise InvalidArgument(empty, "a report without content")
    accepted, rejected = [], []
    for report in batch.reports:
        held = session.held.get(report.assignment_id)
        if held is None:
            rejected.append(W.RejectedReport(report_id=report.report_id, reason=W.REJECT_REASON_STALE_ASSIGNMENT,
                                             message="this session holds no such assignment"))
            continue
        v = Violations()
        if report.WhichOneof("report") == "log":
            entry = report.log
            kind, (message, data) = EventType.LOG, run_reports.log_event(v, "log.", entry.message, entry.level,
                                                                          entry.data_json)
        else:
            p = report.progress
            kind, (message, data) = EventType.PROGRESS, run_reports.progress_event(v, "progress.", p.percent,
                                                                                    p.message, p.step)
        if v.items:
            rejected.append(W.RejectedReport(report_id=report.report_id, reason=W.REJECT_REASON_INVALID_REPORT,
                                             message="; ".join(f"{i.field}: {i.description}" for i in v.items)))
            continue
        accepted.append(Report(report.report_id, held.run.id, held.run.attempt, kind.value, message, data))
    return accepted, rejected


class ReportRecorder:
    """One session's writer: takes what is waiting, writes it in one statement, answers, and tells the
    run watchers; a database that cannot answer is waited for (the worker waits for its answers)."""

    def __init__(self, context: RunContextStore, on_events: Callable[[Iterable[str]], None]) -> None:
        self._context = context
        self._on_events = on_events

    async def serve(self, session: Session, waiting: asyncio.Queue[list[Report]]) -> None:
        """Until cancelled (the session's end)."""
        while True:
            batch = await waiting.get()
            while not waiting.empty() and len(batch) < MAX_REPORTS:
                batch += waiting.get_nowait()
            seqs = await self._write(batch)
            recorded = [W.RecordedReport(report_id=r.report_id, sequence=seq)
                        for r, seq in zip(batch, seqs, strict=True) if seq is not None]
            moved_on = [W.RejectedReport(report_id=r.report_id, reason=W.REJECT_REASON_RUN_MOVED_ON,
                                         message="the run's attempt is over (finished, canceled or timed out)")
                        for r, seq in zip(batch, seqs, strict=True) if seq is None]
            session.outbox.put_nowait(W.ConnectResponse(
                reports_recorded=W.ReportsRecorded(recorded=recorded, rejected=moved_on)))
            self._on_events({r.run_id for r, seq in zip(batch, seqs, strict=True) if seq is not None})

    async def _write(self, batch: list[Report]) -> list[int | None]:
        delay = RETRY_FIRST_S
        while True:
            try:
                return await self._context.append_many(
                    [(r.run_id, r.attempt, r.type, r.message, r.data) for r in batch])
            except DATABASE_ERRORS as exc:
                log.warning("worker reports not written, trying again in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
