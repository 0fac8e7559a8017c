"""Cron arithmetic: validating expressions, and the ticks of a schedule in its time zone.

Ticks follow wall-clock time in the schedule's zone (croniter). Across a daylight-saving change:
- spring forward: a time that does not exist that day (02:30) fires once, at the first valid time after;
- fall back: a fixed-hour schedule whose wall-clock time happens twice (01:30) fires once, the first time;
  schedules with a wildcard hour ("*/30 * * * *") keep firing through the repeated hour, as cron does.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not an acceptable 5-field cron expression, or None."""
    if len(expression.split()) != 5:
        return "must have exactly 5 fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(expression):
        return "is not a valid cron expression"
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:  # e.g. "0 0 31 2 *": valid fields, no date ever matches
        return "never matches any date"
    return None


def zone(name: str) -> ZoneInfo | None:
    if len(name) > 64:
        return None
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: names the file system refuses
        return None


def _fixed_hours(expression: str) -> bool:
    return len(croniter(expression).expanded[1]) < 24


def _minute(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def next_tick(expression: str, tz_name: str, after: datetime) -> datetime:
    """The first tick strictly after `after` (an aware datetime), in UTC."""
    # Ticks fall on whole minutes, so the first tick after `after` is the first after its minute: cached by
    # minute, a scheduler firing ten thousand schedules of a few expressions asks croniter a few times.
    return _next_tick(expression, tz_name, _minute(after))


@functools.lru_cache(maxsize=4096)
def _next_tick(expression: str, tz_name: str, after: datetime) -> datetime:
    tz = zone(tz_name) or UTC
    local_after = after.astimezone(tz)
    it = croniter(expression, local_after)
    tick: datetime = it.get_next(datetime)
    if _fixed_hours(expression):
        # Fall back: the same wall-clock time again, an hour later, is the same tick. (Compare instants in
        # UTC: two datetimes in the same zone compare by wall-clock time, ignoring the fold.)
        while _repeats(tick, croniter(expression, tick).get_prev(datetime)):
            tick = it.get_next(datetime)
    return tick.astimezone(UTC)


def _wall(value: datetime) -> datetime:
    return value.replace(tzinfo=None, fold=0)


def _repeats(tick: datetime, previous: datetime) -> bool:
    """Whether `tick` is the second occurrence of the wall-clock time of the tick before it."""
    return _wall(tick) == _wall(previous) and previous.astimezone(UTC) < tick.astimezone(UTC)


def latest_tick(expression: str, tz_name: str, not_after: datetime) -> datetime:
    """The last tick at or before `not_after`, in UTC."""
    return _latest_tick(expression, tz_name, _minute(not_after))


@functools.lru_cache(maxsize=4096)
def _latest_tick(expression: str, tz_name: str, not_after: datetime) -> datetime:
    tz = zone(tz_name) or UTC
    tick: datetime = croniter(expression, (not_after + timedelta(microseconds=1)).astimezone(tz)).get_prev(datetime)
    return tick.astimezone(UTC)


def upcoming(expression: str, tz_name: str, after: datetime, count: int) -> list[datetime]:
    ticks = []
    for _ in range(count):
        after = next_tick(expression, tz_name, after)
        ticks.append(after)
    return ticks


def window_open(expression: str, tz_name: str, at: datetime) -> bool:
    """Whether `at` falls in an execution window: the set of minutes the expression matches, read in the
    job's zone (so "* 9-17 * * 1-5" is weekday business hours, and "0 9-17 * * 1-5" only the first minute
    of each of those hours)."""
    local = at.astimezone(zone(tz_name) or UTC).replace(second=0, microsecond=0)
    return bool(croniter.match(expression, local))


def window_opens(expression: str, tz_name: str, after: datetime) -> datetime:
    """The start of the next window minute after `after` (UTC)."""
    return next_tick(expression, tz_name, after)
