"""The command line's value syntax: durations, points in time, and how results become JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from strait_client import RunStatus
from strait_client._admin_models import ApiRateLimit
from strait_client.cli._parse import parse_duration, parse_time
from strait_client.cli._render import plain


@pytest.mark.parametrize(("text", "expected"), [
    ("90", timedelta(seconds=90)),
    ("1.5", timedelta(seconds=1.5)),
    ("500ms", timedelta(milliseconds=500)),
    ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("2d", timedelta(days=2)),
    (" 1m30s ", timedelta(seconds=90)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5 m", "-5s", "5x", "m5", "1h 30m", "nan", "inf", "1e3"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_times_are_durations_ago_or_iso_8601() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert parse_time("15m", now) == datetime(2026, 12, 7, 11, 45, tzinfo=UTC)
    assert parse_time("2026-12-07T09:00:00Z") == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    paris = parse_time("2026-12-07T10:00:00+01:00")
    assert paris == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    naive = datetime(2026, 12, 7, 10, 0)
    assert parse_time("2026-12-07T10:00:00") == naive.astimezone(UTC)  # local time
    assert parse_time("2026-12-07") == datetime(2026, 12, 7).astimezone(UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_time("yesterday")


def test_results_become_json_ready_values() -> None:
    assert plain({"when": datetime(2026, 12, 7, 9, 0, 1, 500, tzinfo=timezone(timedelta(hours=1))),
                  "took": timedelta(milliseconds=1500), "status": RunStatus.DEAD_LETTER, "ids": ("a", "b"),
                  "limit": ApiRateLimit(100, timedelta(seconds=1)), "none": None}) == {
        "when": "2026-12-07T08:00:01.000500Z", "took": 1.5, "status": "dead_letter", "ids": ["a", "b"],
        "limit": {"requests": 100, "window": 1.0}, "none": None}
