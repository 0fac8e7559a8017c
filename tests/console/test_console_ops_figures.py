"""The overview's charts on their own: bars scaled to the largest, their parts stacked, long names cut."""

from __future__ import annotations

from strait_server.console import charts


def test_charts_scale_bars_to_the_largest_and_stack_their_parts() -> None:
    chart = charts.columns("runs", ["a", "b"], [(2, 2), (1, 0)], ("ok", "bad"), ("done", "failed"), str)
    tall, short = chart.bars
    assert [s.tone for s in tall.segments] == ["ok", "bad"] and short.segments[0].height * 2 == tall.segments[0].height
    assert tall.title == "a: done 2, failed 2" and short.title == "b: done 1" and chart.top == "4"
    rows = charts.rows("depth", ["a-very-long-job-slug-that-goes-on"], [(5, 5)], ("idle", "busy"), ("q", "e"), str)
    assert rows.bars[0].label.endswith("…") and rows.bars[0].value == "10"
