from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from strait_server.schedule import cron_problem, latest_tick, next_tick, upcoming

NY = "America/New_York"


def local(ticks: list[datetime], tz: str = NY) -> list[str]:
    return [t.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M %z") for t in ticks]


def test_spring_forward_time_that_does_not_exist_fires_once() -> None:
    # 2026-03-08: clocks jump from 02:00 to 03:00 in New York; 02:30 does not exist that day.
    ticks = upcoming("30 2 * * *", NY, datetime(2026, 3, 7, 17, tzinfo=UTC), 3)
    assert local(ticks) == ["03-08 03:00 -0400", "03-09 02:30 -0400", "03-10 02:30 -0400"]


def test_fall_back_repeated_time_fires_once() -> None:
    # 2026-11-01: 01:00-02:00 happens twice; a daily 01:30 fires at the first 01:30 only.
    ticks = upcoming("30 1 * * *", NY, datetime(2026, 10, 31, 16, tzinfo=UTC), 3)
    assert local(ticks) == ["11-01 01:30 -0400", "11-02 01:30 -0500", "11-03 01:30 -0500"]


def test_wildcard_hours_keep_firing_through_the_repeated_hour() -> None:
    ticks = upcoming("*/30 * * * *", NY, datetime(2026, 11, 1, 4, 50, tzinfo=UTC), 5)
    assert local(ticks) == ["11-01 01:00 -0400", "11-01 01:30 -0400", "11-01 01:00 -0500",
                            "11-01 01:30 -0500", "11-01 02:00 -0500"]


def test_latest_tick_for_misfires() -> None:
    now = datetime(2026, 12, 1, 10, 17, 30, tzinfo=UTC)
    assert latest_tick("*/5 * * * *", "UTC", now) == datetime(2026, 12, 1, 10, 15, tzinfo=UTC)
    assert latest_tick("*/5 * * * *", "UTC", now.replace(minute=15, second=0)) == now.replace(minute=15, second=0)
    assert next_tick("*/5 * * * *", "UTC", now) == datetime(2026, 12, 1, 10, 20, tzinfo=UTC)


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "61 * * * *", "@hourly", "x y z a b"])
def test_bad_expressions(expression: str) -> None:
    assert cron_problem(expression) is not None


def test_good_expression() -> None:
    assert cron_problem("* 9-17 * * 1-5") is None


@pytest.mark.parametrize("name", ["Mars/Olympus", "x" * 300, "../../etc/passwd", "a\x00b", ""])
def test_time_zone_names_that_are_not_zones(name: str) -> None:
    from strait_server.schedule import zone

    assert (zone(name) is None) == (name != "")
