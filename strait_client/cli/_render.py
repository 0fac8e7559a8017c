"""How results are printed: JSON for machines (`--output json`), rich tables for people."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

F = TypeVar("F", bound=Callable[..., Any])
UNBOUNDED = 100_000  # columns: wide enough to measure any table at its natural width
Output = Literal["table", "json"]

STATUS_STYLES = {
    "completed": "green", "executing": "cyan", "queued": "blue", "delayed": "blue", "waiting": "yellow",
    "paused": "yellow", "canceled": "magenta", "expired": "magenta", "failed": "red", "dead_letter": "red",
    "timed_out": "red", "crashed": "red", "system_failed": "red", "open": "red", "half_open": "yellow",
    "closed": "green",
}


def output_option(command: F) -> F:
    """The `-o/--output` option every command that prints a result takes."""
    return click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
                        help="table: for people; json: one JSON document (a stream: one object per line).")(command)


def plain(value: Any) -> Any:
    """A result as JSON-ready data: dataclasses as objects, times as ISO 8601 UTC, durations as seconds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def print_json(value: Any, *, stream: bool = False) -> None:
    """One JSON document on stdout: indented, or on one line for an item of a stream."""
    text = json.dumps(plain(value), ensure_ascii=False, indent=None if stream else 2)
    click.echo(text)


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr); colours only on a terminal. Lines are never broken or cut
    (a terminal wraps them), so that ids stay whole and `grep` sees whole lines."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_whole(out: Console, renderable: Any) -> None:
    """Prints a table or grid at its natural width, even when wider than the terminal, instead of cutting it."""
    natural = Measurement.get(out, out.options.update_width(UNBOUNDED), renderable).maximum
    out.width = max(out.width, natural)  # print(width=) would be capped at the terminal's
    out.print(renderable)


def status_text(status: object) -> Text:
    name = str(status) if status is not None else "-"
    return Text(name, style=STATUS_STYLES.get(name, ""))


def when(value: datetime | None) -> str:
    """A time for people: local, to the second."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def span(value: timedelta | None) -> str:
    """A duration for people: 250ms, 4.2s, 3m05s, 2h10m."""
    if value is None:
        return "-"
    total = value.total_seconds()
    if total < 1:
        return f"{total * 1000:.0f}ms"
    if total < 60:
        return f"{total:.1f}s"
    minutes, seconds = divmod(int(total), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


_CELL_FORMATS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Text | str]], ...] = (
    (enum.Enum, lambda v: status_text(v.value)),
    (datetime, when),
    (timedelta, span),
    (bool, lambda v: "yes" if v else "no"),
    (Mapping, lambda v: ", ".join(f"{k}={x}" for k, x in v.items())),
    ((list, tuple), lambda v: ", ".join(str(x) for x in v)),
    ((str, int, float), str),
)


def cell(value: Any) -> Text | str:
    """A field's value in a table cell ("-" for none); records and other values as JSON."""
    if isinstance(value, Text):
        return value
    if value is None or value == "" or value == {} or value == ():
        return "-"
    for kind, render in _CELL_FORMATS:
        if isinstance(value, kind):
            return render(value)
    return json.dumps(plain(value), ensure_ascii=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> Table:
    """A table with these column headings; each row's values go through `cell`."""
    out = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for heading in columns:
        out.add_column(heading, no_wrap=True)
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    return out


def details(value: Any, *, skip: Iterable[str] = (), extra: Iterable[tuple[str, Any]] = ()) -> Table:
    """A record's fields, one per line (those without a value left out), then the `extra` (name, value) rows."""
    out = Table.grid(padding=(0, 2))
    out.add_column(style="bold")
    out.add_column()
    left_out = set(skip)
    rows = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in left_out]
    for name, field_value in [*rows, *extra]:
        shown = cell(field_value)
        if shown != "-":
            out.add_row(name, shown)
    return out


def show(output: str, value: Any, human: Callable[[], Any]) -> None:
    """Prints `value` as JSON, or what `human()` builds (a rich renderable) for people."""
    if output == "json":
        print_json(value)
    else:
        print_whole(console(), human())
