"""Parameter types for the command line: durations, points in time, KEY=VALUE pairs, rate limits and JSON
payloads, each refused with a message that says what was expected."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1)}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str) -> timedelta:
    """`90` (seconds), `1.5s`, `500ms`, `5m`, `2h`, `1d` or a sum such as `1h30m`; ValueError otherwise."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return timedelta(seconds=float(text))
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 500ms, 5m, 1h30m)")
    return sum((float(number) * _UNITS[unit] for number, unit in parts), timedelta(0))


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A point in time: an ISO 8601 date or time (without an offset: local time), or a duration meaning that long
    ago. ValueError otherwise."""
    try:
        ago = parse_duration(text)
    except ValueError:
        pass
    else:
        return (now or datetime.now(UTC)) - ago
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (15m, 2h, 1d) nor an ISO 8601 time "
                         "(2025-01-31T09:00:00Z)") from None
    return moment.astimezone(UTC) if moment.tzinfo is None else moment  # naive: the local time zone's


class Duration(click.ParamType[timedelta]):
    """A duration option: see parse_duration."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Moment(click.ParamType[datetime]):
    """A point in time option: see parse_time."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class KeyValue(click.ParamType[tuple[str, str]]):
    """KEY=VALUE, as a (key, value) pair of strings."""

    name = "key=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key, text


class FieldValue(KeyValue):
    """FIELD=VALUE for any field of a message: VALUE is read as JSON when it parses, else taken as a string."""

    name = "field=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        key, text = super().convert(value, param, ctx)
        try:
            return key, json.loads(text)
        except ValueError:
            return key, text


class RateLimit(click.ParamType[dict[str, Any]]):
    """REQUESTS/WINDOW, e.g. 100/1s or 5000/1m, as {"requests": .., "window": timedelta}."""

    name = "requests/window"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        count, sep, window = str(value).partition("/")
        try:
            if not sep or not count.isdigit():
                raise ValueError(f"{value!r} is not REQUESTS/WINDOW (e.g. 100/1s)")
            return {"requests": int(count), "window": parse_duration(window)}
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def json_object(text: str, what: str) -> dict[str, Any]:
    """`text` parsed as a JSON object; click.BadParameter naming `what` otherwise."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=what) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object, not {type(value).__name__}", param_hint=what)
    return value


def read_payload(argument: str | None) -> dict[str, Any]:
    """The payload argument: a JSON object, `-` to read one from standard input, or nothing for {}."""
    if argument is None:
        return {}
    text = sys.stdin.read() if argument == "-" else argument
    return json_object(text, "PAYLOAD")


DURATION = Duration()
MOMENT = Moment()
KEY_VALUE = KeyValue()
FIELD_VALUE = FieldValue()
RATE_LIMIT = RateLimit()
