"""Per-project limits on open watch streams (per server process)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from strait_server.errors import ResourceExhausted


class StreamLimits:
    def __init__(self, per_project: int) -> None:
        self._per_project = per_project
        self._open: Counter[str] = Counter()

    @property
    def open_streams(self) -> int:
        return sum(self._open.values())

    @contextlib.contextmanager
    def open(self, project_id: str) -> Iterator[None]:
        if self._open[project_id] >= self._per_project:
            raise ResourceExhausted(
                f"this project already has {self._per_project} open watch streams on this server",
                reason="WATCH_STREAMS_EXHAUSTED", retry_after_seconds=5.0)
        self._open[project_id] += 1
        try:
            yield
        finally:
            self._open[project_id] -= 1
            if not self._open[project_id]:
                del self._open[project_id]
