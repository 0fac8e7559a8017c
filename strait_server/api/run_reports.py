"""What code inside a run may report as a log line or progress, checked the same way whether it arrives as a
RunContextService call or on a worker's stream: the event's message and data, or violations."""

from __future__ import annotations

from typing import Any

from strait_server.api import validate
from strait_server.errors import Violations

LEVELS = frozenset({"debug", "info", "warn", "error"})
MAX_MESSAGE = 4096
MAX_DATA_BYTES = 64 * 1024


def log_event(v: Violations, prefix: str, message: str, level: str, data_json: str) -> tuple[str, dict[str, Any]]:
    """(message, data) of a log event; `prefix` leads the violations' field paths."""
    level = level or "info"
    if level not in LEVELS:
        v.add(f"{prefix}level", "must be debug, info, warn or error")
    validate.check_text(v, f"{prefix}message", message, max_len=MAX_MESSAGE, required=True)
    parsed = (validate.check_json(v, f"{prefix}data_json", data_json, MAX_DATA_BYTES, object_only=True)
              if data_json else None)
    data: dict[str, Any] = {"level": level}
    if parsed is not None:
        data["data"] = parsed
    return message, data


def progress_event(v: Violations, prefix: str, percent: float, message: str, step: str
                   ) -> tuple[str, dict[str, Any]]:
    """(message, data) of a progress event; `prefix` leads the violations' field paths."""
    if not 0 <= percent <= 100:  # also refuses NaN
        v.add(f"{prefix}percent", "must be between 0 and 100")
    validate.check_text(v, f"{prefix}message", message, max_len=MAX_MESSAGE)
    validate.check_text(v, f"{prefix}step", step, max_len=256)
    return message, {"percent": percent, "step": step}
