"""Following runs as they happen: one run's live view (`runs watch`) and the project feed
(`runs tail`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.text import Text

from strait_client._client import Client
from strait_client._enums import RunStatus
from strait_client._models import FeedEvent, Run, RunEvent
from strait_client.cli._render import console, print_json, span, status_text
from strait_client.cli._runs_view import JobNames, event_line


class RunView:
    """The live picture of one run: a status line and a progress bar driven by its progress events."""

    def __init__(self, run: Run, job_slug: str) -> None:
        self.run_id = run.id
        self.job_slug = job_slug
        self.status: RunStatus | None = run.status
        self.attempt, self.max_attempts = run.attempt, run.max_attempts
        self.created = run.create_time or datetime.now(UTC)
        self.ended: datetime | None = None
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 auto_refresh=False)
        self._task = self.progress.add_task("progress", total=100)
        self.reported_progress = False

    def apply(self, event: RunEvent) -> None:
        if event.type == "status_change" and event.to_status is not None:
            self.status = event.to_status
            self.attempt = event.attempt or self.attempt
            self.ended = event.create_time if event.ends_run else None
        elif event.type == "progress" and isinstance(event.data, dict) and "percent" in event.data:
            described = event.message or event.data.get("step") or "progress"
            self.reported_progress = True
            self.progress.update(self._task, completed=float(event.data["percent"]), description=described)

    def status_line(self) -> Text:
        return Text.assemble((self.run_id, "bold"), f"  job {self.job_slug}  ", status_text(self.status),
                             f"  attempt {self.attempt}/{self.max_attempts}",
                             f"  {span((self.ended or datetime.now(UTC)) - self.created)}")

    def __rich__(self) -> RenderableType:
        return Group(self.status_line(), self.progress) if self.reported_progress else self.status_line()


def final_line(event: RunEvent | None, run_id: str) -> Text:
    if event is None:
        return Text(f"{run_id}: the watch ended before the run finished")
    return Text.assemble((run_id, "bold"), " ", status_text(event.to_status),
                         f": {event.message}" if event.message else "")


def follow_run(client: Client, run: Run, output: str) -> RunStatus | None:
    """Prints the run's events until it finishes: JSON lines, a live view on a terminal, else plain lines.

    Returns:
        The run's final status (None if the stream ended without one).
    """
    events = client.runs.watch(run.id)
    if output == "json":
        return _last_status(_echo_json(events))
    out = console()
    if not out.is_terminal:
        last = None
        for event in events:
            out.print(event_line(event))
            last = event if event.ends_run else last
        out.print(final_line(last, run.id))
        return last.to_status if last else None
    return _live(out, RunView(run, JobNames(client)(run.job_id)), events)


def _live(out: Console, view: RunView, events: Iterable[RunEvent]) -> RunStatus | None:
    last = None
    with Live(view, console=out, refresh_per_second=8, transient=True) as live:
        for event in events:
            view.apply(event)
            if event.type != "progress":  # progress shows in the bar; other events scroll above it
                live.console.print(event_line(event))
            last = event if event.ends_run else last
            live.refresh()
    out.print(view)
    out.print(final_line(last, view.run_id))
    return last.to_status if last else None


def _echo_json(events: Iterable[RunEvent]) -> Iterator[RunEvent]:
    for event in events:
        print_json(event, stream=True)
        yield event


def _last_status(events: Iterable[RunEvent]) -> RunStatus | None:
    status = None
    for event in events:
        if event.ends_run:
            status = event.to_status
    return status


def tail(client: Client, events: Iterable[FeedEvent], output: str) -> None:
    """Prints the project's events as they come, until interrupted."""
    if output == "json":
        for _ in _echo_json(events):
            pass
        return
    out = console()
    slug = JobNames(client)
    for event in events:
        prefix = Text.assemble((event.run_id, "bold"), f"  {slug(event.job_id)}  ")
        out.print(event_line(event, prefix))
