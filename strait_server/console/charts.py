"""Small bar charts drawn on the server as SVG (templates/chart.html draws what these compute): stacked columns
over time, stacked rows per name. No script and no inline style: colours come from console.css by tone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

COLUMN_WIDTH = 560
COLUMN_HEIGHT = 170
ROW_WIDTH = 560
ROW_HEIGHT = 22
LABEL_WIDTH = 170  # the names beside rows
AXIS_WIDTH = 52  # the scale's figures left of columns
LABEL_CHARS = 24


@dataclass(frozen=True, slots=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    tone: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One column or row: its segments, stacked, and what it says (a tooltip, and a label when there is room)."""

    label: str
    label_x: float
    label_y: float
    title: str
    segments: tuple[Segment, ...]
    value: str = ""
    value_x: float = 0.0


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart's accessible name (`title`), size, bars, the value at the top of its scale, and its legend."""

    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    top: str
    baseline: tuple[float, float, float, float]
    legend: tuple[tuple[str, str], ...]
    vertical: bool


def _scale(stacks: Sequence[Sequence[float]]) -> float:
    return max((sum(stack) for stack in stacks), default=0.0) or 1.0


def _title(label: str, stack: Sequence[float], names: Sequence[str], fmt: Callable[[float], str]) -> str:
    parts = [f"{name} {fmt(value)}" for name, value in zip(names, stack, strict=True) if value]
    return f"{label}: " + (", ".join(parts) if parts else "none")


def columns(title: str, labels: Sequence[str], stacks: Sequence[Sequence[float]], tones: Sequence[str],
            names: Sequence[str], fmt: Callable[[float], str], label_every: int = 3) -> Chart:
    """Stacked columns, one per label (time buckets, oldest first); every `label_every`-th is labelled."""
    top = _scale(stacks)
    plot_height = COLUMN_HEIGHT - 22
    slot = (COLUMN_WIDTH - AXIS_WIDTH) / max(len(labels), 1)
    bars = []
    for i, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        x = AXIS_WIDTH + i * slot + 2
        y = float(plot_height)
        segments = []
        for value, tone in zip(stack, tones, strict=True):
            height = plot_height * value / top
            if height > 0:
                y -= height
                segments.append(Segment(x, y, slot - 4, height, tone))
        bars.append(Bar(label if i % label_every == 0 else "", x + (slot - 4) / 2, COLUMN_HEIGHT - 6,
                        _title(label, stack, names, fmt), tuple(segments)))
    return Chart(title, COLUMN_WIDTH, COLUMN_HEIGHT, tuple(bars), fmt(top) if any(map(sum, stacks)) else "0",
                 (AXIS_WIDTH, plot_height, COLUMN_WIDTH, plot_height), tuple(zip(tones, names, strict=True)), True)


def rows(title: str, labels: Sequence[str], stacks: Sequence[Sequence[float]], tones: Sequence[str],
         names: Sequence[str], fmt: Callable[[float], str]) -> Chart:
    """Stacked rows, one per label (jobs), with each row's total after it."""
    top = _scale(stacks)
    plot_width = ROW_WIDTH - LABEL_WIDTH - 70
    bars = []
    for i, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        y = i * ROW_HEIGHT + 3
        x = float(LABEL_WIDTH)
        segments = []
        for value, tone in zip(stack, tones, strict=True):
            width = plot_width * value / top
            if width > 0:
                segments.append(Segment(x, y, width, ROW_HEIGHT - 6, tone))
                x += width
        short = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
        bars.append(Bar(short, LABEL_WIDTH - 6, y + ROW_HEIGHT - 9, _title(label, stack, names, fmt),
                        tuple(segments), fmt(sum(stack)), x + 4))
    height = max(len(labels), 1) * ROW_HEIGHT
    return Chart(title, ROW_WIDTH, height, tuple(bars), fmt(top), (LABEL_WIDTH, 0, LABEL_WIDTH, height),
                 tuple(zip(tones, names, strict=True)), False)
