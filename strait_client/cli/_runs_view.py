"""How runs and their events look to people: tables, one run's details, one line per event."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from strait_client._client import Client
from strait_client._errors import NotFoundError
from strait_client._models import Run, RunEvent
from strait_client.cli._render import details, span, status_text, table, when


class JobNames:
    """Job slugs by job id, each read once (a deleted job keeps its id)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._slugs: dict[str, str] = {}

    def __call__(self, job_id: str) -> str:
        if job_id not in self._slugs:
            try:
                self._slugs[job_id] = self._client.jobs.get(job_id).slug
            except NotFoundError:
                self._slugs[job_id] = job_id
        return self._slugs[job_id]


def took(run: Run) -> str:
    return span(run.finish_time - run.start_time) if run.finish_time and run.start_time else "-"


def runs_table(runs: Iterable[Run], slug: JobNames) -> RenderableType:
    return table(["ID", "JOB", "STATUS", "ATTEMPT", "CREATED", "TOOK", "ERROR"],
                 ([r.id, slug(r.job_id), r.status, f"{r.attempt}/{r.max_attempts}", r.create_time, took(r),
                   _clip(r.error)] for r in runs))


def run_details(run: Run, job_slug: str) -> RenderableType:
    documents = [(name, json.dumps(value, ensure_ascii=False)) for name, value in (
        ("payload", run.payload), ("output", run.output)) if value is not None]
    parts: list[RenderableType] = [details(run, skip=("attempts", "payload", "output", "job_id"),
                                           extra=[("job", f"{job_slug} ({run.job_id})"), *documents])]
    if run.attempts:
        parts.append(table(["ATTEMPT", "STARTED", "HTTP", "TOOK", "ERROR"],
                           ([a.attempt, a.start_time, a.status_code or "-", a.duration, a.error]
                            for a in run.attempts), title="attempts"))
    return Group(*parts)


def events_table(events: Iterable[RunEvent]) -> RenderableType:
    return table(["SEQ", "TIME", "TYPE", "WHAT", "MESSAGE"],
                 ([e.sequence, e.create_time, e.type, what(e), e.message] for e in events))


def what(event: RunEvent) -> Text:
    """The gist of an event: a status change's from → to, a log's level, a progress percentage."""
    data: Any = event.data if isinstance(event.data, dict) else {}
    if event.type == "status_change":
        arrow = Text.assemble("→ ", status_text(event.to_status))
        return Text.assemble(status_text(event.from_status), " ", arrow) if event.from_status else arrow
    if event.type == "log":
        return Text(str(data.get("level", "")))
    if event.type == "progress" and "percent" in data:
        step = f" {data['step']}" if data.get("step") else ""
        return Text(f"{float(data['percent']):.0f}%{step}")
    return Text("")


def event_line(event: RunEvent, prefix: Text | str = "") -> Text:
    """One event on one line: `12:00:01  type  what  message`."""
    parts = [Text(when(event.create_time)[-8:]), Text.assemble(prefix, (event.type, "bold")), what(event),
             Text(event.message)]
    return Text("  ").join(part for part in parts if part)


def _clip(text: str, width: int = 60) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width - 1] + "…"
