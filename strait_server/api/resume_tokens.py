"""Resume tokens of the feeds (WatchRuns, WatchWorkflowRuns): a feed's position as opaque URL-safe text, with
a version that says which feed issued it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

from strait_server import errors

T = TypeVar("T")


def encode(version: str, *parts: object) -> str:
    return base64.urlsafe_b64encode(":".join(map(str, [version, *parts])).encode()).decode().rstrip("=")


def decode(token: str, version: str, parse: Callable[[list[str]], T]) -> T:
    """The position in `token`, made by `parse` from its parts (which raises ValueError for parts that are not
    a position); INVALID_ARGUMENT on `resume_token` for anything but a token of this feed."""
    try:
        issued_by, *parts = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
        if issued_by != version:
            raise ValueError(issued_by)
        return parse(parts)
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument([errors.FieldViolation("resume_token", "is not a token this feed issued")]
                                     ) from None
